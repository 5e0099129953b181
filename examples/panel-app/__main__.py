"""Panel as a code service. Deploy with the route prefix kept (--keep-prefix): `panel serve
--prefix` is $LAB_SERVICE_URL; the lab's proxy checks WebSocket origins itself."""

import os
import sys
from pathlib import Path

from panel.command import main

#: Loopback on the local runtime (it sets HOST), every address inside a container.
HOST = os.environ.get("HOST", "0.0.0.0")
sys.argv = [
    "panel",
    "serve",
    str(Path(__file__).with_name("page.py")),
    f"--port={os.environ.get('PORT', '8091')}",
    f"--address={HOST}",
    f"--prefix={os.environ['LAB_SERVICE_URL'].rstrip('/')}",
    "--allow-websocket-origin=*",
    "--index=page",
]
sys.exit(main())
