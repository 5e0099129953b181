"""Start the example service: `python -m app`, listening on $PORT (default 8080)."""

import logging
import sys

import uvicorn

from app.main import port

if __name__ == "__main__":
    # Everything goes to stdout: `docker logs` (and servicelab's log view) shows it.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    log_config = uvicorn.config.LOGGING_CONFIG
    for handler in log_config["handlers"].values():
        handler["stream"] = "ext://sys.stdout"
    uvicorn.run(
        "app.main:app",
        host="0.0.0.0",
        port=port(),
        log_config=log_config,
        # Trust X-Forwarded-* from the proxy in front (servicelab's reverse proxy).
        proxy_headers=True,
        forwarded_allow_ips="*",
    )
