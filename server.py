"""The classic entry point: `python server.py [flags]` serves like `toolrpc serve [flags]`.

`MODEL_ID=/path/to/model.gguf python server.py` picks the model, as the original server did.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from toolrpc.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
