import sys

from mmbert.cli import main

sys.exit(main())
