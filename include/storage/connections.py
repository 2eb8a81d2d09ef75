"""Credentials of a bucket: an Airflow connection named in the YAML, or the provider's default chain.

A pipeline YAML never holds secrets. `storage.connection` (and `data.connection`) name an Airflow
connection; `use_connection` binds it to the bucket it serves, and every reader and writer of that
bucket in this process then opens it with the connection's credentials.

include/ imports no Airflow, so Airflow's own lookup (secrets backends, the metastore, and in a
task the execution API) is registered by plugins/savedmodel_storage.py, which every Airflow
component imports (`set_connection_reader`). Outside Airflow (the registry CLI, scripts) a
connection is read from its `AIRFLOW_CONN_<ID>` variable in Airflow's JSON form. A bucket no connection is
bound to uses the provider's default chain (Application Default Credentials for gs://, the AWS
chain of environment, profile and instance role for s3://).

What a connection may hold, by scheme:

    gs://  type google_cloud_platform; extra: key_path or keyfile_dict (a service account),
           project, endpoint_url (an emulator), anonymous (true: no credentials)
    s3://  type aws; login = access key id, password = secret key; extra: endpoint_url,
           region_name, aws_session_token
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

# gcsfs probes every bucket over gRPC for the experimental zonal buckets unless told not to; that
# probe waits 60 s on an endpoint without gRPC (an emulator, a proxy). Opt in by setting it true.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from include.errors import StorageError
from include.storage.location import BucketURI, location

_bound: dict[tuple[str, str], str] = {}  # (scheme, bucket) -> connection id
_lock = threading.Lock()


def use_connection(where: str, conn_id: str | None) -> None:
    """Binds the Airflow connection `conn_id` to the bucket of `where` (no-op for local paths or None).

    Binding one bucket to two different connections is refused: which credentials a write used
    must never depend on which pipeline a process loaded first.
    """
    found = location(where)
    if conn_id is None or not isinstance(found, BucketURI):
        return
    key = (found.scheme, found.bucket)
    with _lock:
        bound = _bound.setdefault(key, conn_id)
    if bound != conn_id:
        raise StorageError(
            f"bucket {found.scheme}://{found.bucket} is bound to Airflow connection {bound!r} and cannot "
            f"also use {conn_id!r}: name one connection for a bucket in every pipeline"
        )


def connection_of(uri: BucketURI) -> str | None:
    """Returns the Airflow connection bound to `uri`'s bucket (None: the default chain opens it)."""
    return _bound.get((uri.scheme, uri.bucket))


def storage_options(uri: BucketURI) -> dict:
    """Returns the fsspec options that open `uri`'s bucket (from its connection, else the default chain)."""
    conn_id = connection_of(uri)
    if conn_id is None:
        return {}
    return _options(uri.scheme, conn_id)


def filesystem(uri: BucketURI):
    """Returns the fsspec filesystem of `uri`'s bucket (gcsfs or s3fs), cached per options."""
    options = storage_options(uri)
    return _filesystem(uri.scheme, json.dumps(options, sort_keys=True, default=str))


@functools.lru_cache(maxsize=32)
def _filesystem(scheme: str, options_json: str):
    import fsspec

    # Listings are never cached: other hosts write the same bucket.
    return fsspec.filesystem(scheme, use_listings_cache=False, **json.loads(options_json))


# gcsfs and s3fs instances refuse to work in a forked child ("not fork-safe"): a child makes its own.
os.register_at_fork(after_in_child=_filesystem.cache_clear)


@dataclass(frozen=True)
class ConnectionFields:
    """What this module reads of an Airflow connection (Airflow's Connection has the same names)."""

    login: str | None
    password: str | None
    extra_dejson: dict


def _environment_connection(conn_id: str) -> ConnectionFields:
    """Returns the connection of `AIRFLOW_CONN_<ID>` in Airflow's JSON form (the reader outside Airflow)."""
    name = f"AIRFLOW_CONN_{conn_id.upper()}"
    value = os.environ.get(name)
    if value is None:
        raise LookupError(f"no variable {name} (outside Airflow only variables are read)")
    try:
        found = json.loads(value)
        extra = found.get("extra") or {}
        extra = json.loads(extra) if isinstance(extra, str) else extra
        return ConnectionFields(found.get("login"), found.get("password"), dict(extra))
    except (ValueError, AttributeError, TypeError):
        raise LookupError(f"{name} is not a connection in Airflow's JSON form") from None


_reader: Callable[[str], object] = _environment_connection


def set_connection_reader(reader: Callable[[str], object]) -> None:
    """Makes `reader(conn_id)` (returning an object with login, password, extra_dejson) the lookup."""
    global _reader
    _reader = reader
    _options.cache_clear()


@functools.lru_cache(maxsize=32)
def _options(scheme: str, conn_id: str) -> dict:
    try:
        conn = _reader(conn_id)
    except Exception as err:  # Airflow's AirflowNotFoundException, no secrets backend reachable, ...
        raise StorageError(
            f"cannot read Airflow connection {conn_id!r} for {scheme}:// storage: {err}"
        ) from None
    extra = conn.extra_dejson or {}
    if scheme == "gs":
        options: dict = {}
        if extra.get("anonymous"):
            options["token"] = "anon"  # noqa: S105 - gcsfs's name for no credentials
        elif extra.get("keyfile_dict"):
            keyfile = extra["keyfile_dict"]
            options["token"] = json.loads(keyfile) if isinstance(keyfile, str) else keyfile
        elif extra.get("key_path"):
            options["token"] = extra["key_path"]
        for name in ("project", "endpoint_url"):
            if extra.get(name):
                options[name] = extra[name]
        return options
    options = {}
    if conn.login:
        options["key"] = conn.login
    if conn.password:
        options["secret"] = conn.password
    if extra.get("aws_session_token"):
        options["token"] = extra["aws_session_token"]
    if extra.get("endpoint_url"):
        options["endpoint_url"] = extra["endpoint_url"]
    if extra.get("region_name"):
        options["client_kwargs"] = {"region_name": extra["region_name"]}
    return options
