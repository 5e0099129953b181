"""The key format is defined once (servicelab.files.keys); the executor, standard library
only and copied alone into images, keeps its own copy of the data types."""

from __future__ import annotations

from servicelab import execute
from servicelab.cli import data as cli_data
from servicelab.files import keys


def test_the_executor_knows_the_same_data_types() -> None:
    assert execute.DATA_TYPES == keys.DATA_TYPES


def test_the_cli_uses_the_one_definition() -> None:
    assert cli_data.DATA_TYPES is keys.DATA_TYPES


def test_a_data_key_for_the_executor_is_a_key_for_the_store() -> None:
    for data_type in keys.DATA_TYPES:
        key = f"{data_type}/service.zip.v2"
        assert execute.is_data_key(key)
        assert str(keys.parse_key(key)) == key
