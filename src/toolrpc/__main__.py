"""`python -m toolrpc serve ...`"""

import sys

from toolrpc.cli import main

sys.exit(main())
