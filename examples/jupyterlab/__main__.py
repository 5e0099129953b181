"""JupyterLab as a code service. Deploy with the route prefix kept (--keep-prefix): Jupyter
builds absolute links from --ServerApp.base_url, which is $LAB_SERVICE_URL. The lab's proxy
authenticates every request, so Jupyter's own token is off."""

import os
import sys

from jupyterlab.labapp import main

#: Loopback on the local runtime (it sets HOST), every address inside a container.
HOST = os.environ.get("HOST", "0.0.0.0")
sys.argv = [
    "jupyter-lab",
    f"--ip={HOST}",
    f"--port={os.environ.get('PORT', '8091')}",
    "--port-retries=0",
    f"--ServerApp.base_url={os.environ['LAB_SERVICE_URL']}",
    "--IdentityProvider.token=",
    "--ServerApp.password=",
    "--ServerApp.disable_check_xsrf=True",
    # Browsers reach it on its service origin (<service>--<project>.localhost), a Host
    # Jupyter does not count as local; the lab's proxy is what guards it.
    "--ServerApp.allow_remote_access=True",
    "--ServerApp.open_browser=False",
    f"--ServerApp.root_dir={os.environ.get('LAB_DATA_DIR', '/data')}",
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
]
if os.geteuid() == 0:  # only a lab without the sandbox, run as root, runs it as root
    sys.argv.append("--allow-root")
sys.exit(main())
