import sys
from pathlib import Path

# msg_fill and the helper processes' modules are imported by name from these folders.
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent / "helpers")]
