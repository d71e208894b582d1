import sys

from kdtl.cli import main

sys.exit(main())
