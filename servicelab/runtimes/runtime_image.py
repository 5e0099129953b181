"""What every runtime knows of servicelab's runtime image (images/runtime/Dockerfile),
in which code services run on Docker and Kubernetes."""

#: uid and gid of the image's unprivileged `service` user, which runs a member's code.
SERVICE_UID = 10001
#: Its HOME: uv's cache, and the virtual environment when the code installs something.
SERVICE_HOME = "/workspace/home"
