import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeclareCapacity(_message.Message):
    __slots__ = ("had_finess", "places_available", "admissions_possible_today", "status", "declared_at", "active_patients")
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    PLACES_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ADMISSIONS_POSSIBLE_TODAY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DECLARED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_PATIENTS_FIELD_NUMBER: _ClassVar[int]
    had_finess: str
    places_available: int
    admissions_possible_today: int
    status: str
    declared_at: _timestamp_pb2.Timestamp
    active_patients: int
    def __init__(self, had_finess: _Optional[str] = ..., places_available: _Optional[int] = ..., admissions_possible_today: _Optional[int] = ..., status: _Optional[str] = ..., declared_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., active_patients: _Optional[int] = ...) -> None: ...

class CapacityDeclared(_message.Message):
    __slots__ = ("had_finess", "department", "places_available", "admissions_possible_today", "status", "declared_at", "authorised_places", "departments", "active_patients")
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    PLACES_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ADMISSIONS_POSSIBLE_TODAY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DECLARED_AT_FIELD_NUMBER: _ClassVar[int]
    AUTHORISED_PLACES_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_PATIENTS_FIELD_NUMBER: _ClassVar[int]
    had_finess: str
    department: str
    places_available: int
    admissions_possible_today: int
    status: str
    declared_at: _timestamp_pb2.Timestamp
    authorised_places: int
    departments: _containers.RepeatedScalarFieldContainer[str]
    active_patients: int
    def __init__(self, had_finess: _Optional[str] = ..., department: _Optional[str] = ..., places_available: _Optional[int] = ..., admissions_possible_today: _Optional[int] = ..., status: _Optional[str] = ..., declared_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., authorised_places: _Optional[int] = ..., departments: _Optional[_Iterable[str]] = ..., active_patients: _Optional[int] = ...) -> None: ...

class LivePlacesChanged(_message.Message):
    __slots__ = ("had_finess", "department", "occurred_at", "live_places", "declared_places", "status", "authorised_places", "departments")
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    LIVE_PLACES_FIELD_NUMBER: _ClassVar[int]
    DECLARED_PLACES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AUTHORISED_PLACES_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENTS_FIELD_NUMBER: _ClassVar[int]
    had_finess: str
    department: str
    occurred_at: _timestamp_pb2.Timestamp
    live_places: int
    declared_places: int
    status: str
    authorised_places: int
    departments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, had_finess: _Optional[str] = ..., department: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., live_places: _Optional[int] = ..., declared_places: _Optional[int] = ..., status: _Optional[str] = ..., authorised_places: _Optional[int] = ..., departments: _Optional[_Iterable[str]] = ...) -> None: ...
