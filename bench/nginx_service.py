"""An upstream fast enough not to be what a proxy benchmark measures: a code service (local
runtime, `EXECUTE_CODE`) that runs nginx, one worker, serving a 1 KB file on the port the
lab gives it. Deployed through a lab's API, it is reached through the lab's proxy, and
directly on that port (the baseline). Sandboxed, the service sees its code folder
(read-only) and a /tmp of its own: it serves the file from the first, keeps its nginx
configuration in the second.
"""

from __future__ import annotations

from pathlib import Path

#: The file every proxy benchmark fetches.
SMALL = "/1k.html"

#: The service's `__main__.py`: nginx in the foreground on $PORT, serving its own folder.
SERVICE_MAIN = """
import os, shutil, tempfile
port, tmp = os.environ["PORT"], tempfile.mkdtemp()
www = os.path.dirname(os.path.abspath(__file__))
conf = os.path.join(tmp, "nginx.conf")
with open(conf, "w") as f:
    f.write(f'''
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log stderr warn;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 10000000;
  keepalive_timeout 65;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  types {{ text/html html; }}
  server {{ listen 127.0.0.1:{port}; root {www}; }} }}
''')
nginx = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin")
os.execv(nginx, [nginx, "-c", conf, "-e", "stderr"])
"""


def make_service(code: Path) -> dict[str, str]:
    """Write the service's code and its 1 KB file to `code`; return the deploy body."""
    code.mkdir(parents=True, exist_ok=True)
    code.chmod(0o755)  # a sandboxed service runs as a uid of its own
    (code / "__main__.py").write_text(SERVICE_MAIN)
    (code / SMALL.lstrip("/")).write_bytes(b"x" * 1024)
    for path in code.iterdir():
        path.chmod(0o644)
    return {"EXECUTE_CODE": str(code)}
