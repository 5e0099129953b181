"""The Python client of servicelab, compatible with ML Lab's `lab_client`.

from lab_client import Environment
env = Environment(project="demo", lab_endpoint="http://127.0.0.1:8080", lab_api_token="...")
env.lab_handler.lab_api.deploy_service(project=env.project, image="...", name="my-service",
                                       body={"EXAMPLE_PARAMETER": "example"})
"""

from .api import LabApi
from .config import SavedConfig, config_path, load_config, save_config
from .environment import Environment, LabHandler
from .errors import LabApiError
from .records import Record, to_datetime

__all__ = [
    "Environment",
    "LabApi",
    "LabApiError",
    "LabHandler",
    "Record",
    "SavedConfig",
    "config_path",
    "load_config",
    "save_config",
    "to_datetime",
]
