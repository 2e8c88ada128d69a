"""One module per DVC stage, run by DVC as `python -m pipeline.stages.<name>`.

Each is a thin shell: `run(params)` reads the stage's inputs, calls the pure core that a domain
package holds, writes the outputs and logs the run. Only `cli` imports these modules.

This package's import comes first in a stage process: it hands the stage to the stage host when
one is up (`core.warm`; the rest of this process then only relays signals), and it makes Ctrl-C
in the first moments of a stage, while Python is still importing its modules (before
`core.entry` turns signals into one line), one line too instead of a traceback.
"""

import sys

from pipeline.core import warm


def _interrupted_while_starting(kind, value, traceback) -> None:
    if issubclass(kind, KeyboardInterrupt):
        stage = sys.argv[0].rsplit("/", 1)[-1].removesuffix(".py") if sys.argv else "stage"
        print(f"aepipe {stage}: interrupted", file=sys.stderr)
    else:
        sys.__excepthook__(kind, value, traceback)


sys.excepthook = _interrupted_while_starting

warm.run_in_host()
