"""DescribeLogDirs (Kafka API 35): each broker's log directories, the bytes its
partitions hold there, and (v4, Kafka 3.3+) the volume's total and usable bytes.

aiokafka has no admin call for it, so this module declares the request and response
with aiokafka's own protocol types and sends it to each broker through the admin
client's per-node request path. Disk is the third thing operators must watch, beside
ISR and offsets; ``inferstream kafka status`` shows it per broker and log dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

API_KEY = 35


# aiokafka ships no types, so its protocol base classes are Any to mypy: hence the ignore[misc]s below
class DescribeLogDirsResponse_v4(Response):  # type: ignore[misc]  # aiokafka's naming of protocol versions
    API_KEY = API_KEY
    API_VERSION = 4
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "results",
            CompactArray(
                ("error_code", Int16),
                ("log_dir", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        (
                            "partitions",
                            CompactArray(
                                ("partition_index", Int32),
                                ("partition_size", Int64),
                                ("offset_lag", Int64),
                                ("is_future_key", Boolean),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("total_bytes", Int64),
                ("usable_bytes", Int64),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeLogDirsRequest_v4(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = API_KEY
    API_VERSION = 4
    RESPONSE_TYPE = DescribeLogDirsResponse_v4
    SCHEMA = Schema(
        (
            "topics",  # null: every topic
            CompactArray(
                ("topic", CompactString("utf-8")),
                ("partitions", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeLogDirsRequest(Request[DescribeLogDirsRequest_v4]):  # type: ignore[misc]
    API_KEY = API_KEY

    def build(self, request_struct_class: type[DescribeLogDirsRequest_v4]) -> DescribeLogDirsRequest_v4:
        return request_struct_class(None, {})


@dataclass
class LogDirUsage:
    broker: int
    log_dir: str
    error_code: int
    partitions: int
    bytes: int  # the partitions' data in this directory
    total_bytes: int | None  # the volume's size; None where the broker does not say
    usable_bytes: int | None


async def describe_log_dirs(admin: AIOKafkaAdminClient, broker: int) -> list[LogDirUsage]:
    """One broker's log directories. Raises what aiokafka raises when the broker is
    unreachable or does not support DescribeLogDirs v4 (the caller reports it)."""
    # aiokafka's admin has no public per-node send; this is the path its own calls use
    response: Any = await admin._send_request_to_node(broker, DescribeLogDirsRequest())
    out = []
    for error_code, log_dir, topics, total, usable, _tags in response.results:
        parts = [p for _name, ps, _t in topics for p in ps]
        out.append(
            LogDirUsage(
                broker=broker,
                log_dir=log_dir,
                error_code=error_code,
                partitions=len(parts),
                bytes=sum(p[1] for p in parts),
                total_bytes=total if total >= 0 else None,
                usable_bytes=usable if usable >= 0 else None,
            )
        )
    return out
