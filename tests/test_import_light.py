import subprocess
import sys

HEAVY = ["torch", "transformers", "vllm", "pyserini", "pyterrier", "jnius", "elasticsearch", "opensearchpy",
         "llama_index", "trl", "sentence_transformers", "datasets", "numpy"]


def loaded_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_import_tsqr_plugins_loads_no_heavy_library():
    assert loaded_after("import tsqr_plugins") == []


def test_backend_modules_and_cli_load_no_heavy_library():
    statement = (
        "import tsqr_plugins.cli, tsqr_plugins.cli.rewrite, tsqr_plugins.cli.env\n"
        "from tsqr_plugins.backends import backend_class, BACKENDS\n"
        "[backend_class(name) for name in BACKENDS]"
    )
    assert loaded_after(statement) == []
