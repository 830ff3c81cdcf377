package io.tsqr.analysis;

import org.elasticsearch.plugin.settings.AnalysisSettings;
import org.elasticsearch.plugin.settings.StringSetting;

@AnalysisSettings
public interface StemmerSettings {
    @StringSetting(path = "language", defaultValue = "english")
    String language();
}
