package io.tsqr.analysis;

import java.util.Locale;

import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.en.EnglishPossessiveFilter;
import org.apache.lucene.analysis.en.PorterStemFilter;
import org.elasticsearch.plugin.Inject;
import org.elasticsearch.plugin.NamedComponent;
import org.elasticsearch.plugin.analysis.TokenFilterFactory;

/**
 * `stemmer` for the English languages tsqr's index template uses, with the Lucene filters
 * analysis-common maps them to. Any other language is refused, never silently replaced.
 */
@NamedComponent("stemmer")
public class StemmerFilterFactory implements TokenFilterFactory {
    private final String language;

    @Inject
    public StemmerFilterFactory(StemmerSettings settings) {
        language = settings.language().toLowerCase(Locale.ROOT);
        if (!language.equals("possessive_english") && !language.equals("english") && !language.equals("porter")) {
            throw new IllegalArgumentException(
                "tsqr-es-analysis provides the stemmer languages possessive_english, english and porter only, not ["
                    + language + "]; use a distribution with the analysis-common module for the others");
        }
    }

    @Override
    public TokenStream create(TokenStream tokenStream) {
        if (language.equals("possessive_english")) {
            return new EnglishPossessiveFilter(tokenStream);
        }
        return new PorterStemFilter(tokenStream);
    }
}
