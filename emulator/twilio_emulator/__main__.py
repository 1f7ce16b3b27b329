"""``python -m twilio_emulator``."""

import sys

from .cli import main

sys.exit(main())
