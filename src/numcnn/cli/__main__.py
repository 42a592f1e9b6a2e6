"""``python -m numcnn.cli``: the same as the ``numcnn`` console script."""
import sys

from . import main

sys.exit(main())
