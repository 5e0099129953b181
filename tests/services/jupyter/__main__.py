"""A Jupyter server as a code service, with the route prefix kept (stripPrefix: false).

JupyterLab-style apps build absolute links, so the server must know its prefix: it is
LAB_SERVICE_PATH plus the port. The lab's proxy authenticates every request, so Jupyter's
own token is off; it binds to loopback only.
"""

import os
import sys

from jupyter_server.serverapp import main

port = os.environ.get("PORT", "8091")
base_url = os.environ["LAB_SERVICE_PATH"] + "8091/"
sys.argv = [
    "jupyter-server",
    "--ip=127.0.0.1",
    f"--port={port}",
    "--port-retries=0",
    f"--ServerApp.base_url={base_url}",
    "--IdentityProvider.token=",
    "--ServerApp.password=",
    "--ServerApp.disable_check_xsrf=True",
    # Browsers reach it as <service>--<project>.<domain>, a Host Jupyter would take for
    # remote; it binds to loopback and the lab's proxy authenticates every request.
    "--ServerApp.allow_remote_access=True",
    "--ServerApp.open_browser=False",
    f"--ServerApp.root_dir={os.environ.get('LAB_DATA_DIR', '.')}",
]
sys.exit(main())
