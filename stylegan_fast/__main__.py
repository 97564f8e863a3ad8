"""`python -m stylegan_fast ...` is `stylegan-fast ...`."""

import sys

from stylegan_fast.cli import main

sys.exit(main())
