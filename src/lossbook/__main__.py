import sys

from lossbook.cli import main

sys.exit(main())
