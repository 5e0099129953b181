"""Streamlit as a code service. Deploy with the route prefix kept (--keep-prefix):
Streamlit serves under --server.baseUrlPath, which is $LAB_SERVICE_URL."""

import os
import sys
from pathlib import Path

from streamlit.web import cli

#: Loopback on the local runtime (it sets HOST), every address inside a container.
HOST = os.environ.get("HOST", "0.0.0.0")
sys.argv = [
    "streamlit",
    "run",
    str(Path(__file__).with_name("page.py")),
    f"--server.port={os.environ.get('PORT', '8091')}",
    f"--server.address={HOST}",
    f"--server.baseUrlPath={os.environ['LAB_SERVICE_URL']}",
    "--server.headless=true",
    # The lab's proxy authenticates every request and checks WebSocket origins.
    "--server.enableCORS=false",
    "--server.enableXsrfProtection=false",
    "--browser.gatherUsageStats=false",
]
sys.exit(cli.main())
