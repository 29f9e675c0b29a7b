import sys

from genai.cli import main

sys.exit(main())
