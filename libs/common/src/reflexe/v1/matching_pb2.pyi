import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OfferProposed(_message.Message):
    __slots__ = ("referral_id", "department", "occurred_at", "offer_id", "had_finess", "hold_id", "hold_until", "explanation", "explanation_json", "by_desk")
    REFERRAL_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_UNTIL_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_JSON_FIELD_NUMBER: _ClassVar[int]
    BY_DESK_FIELD_NUMBER: _ClassVar[int]
    referral_id: str
    department: str
    occurred_at: _timestamp_pb2.Timestamp
    offer_id: str
    had_finess: str
    hold_id: str
    hold_until: _timestamp_pb2.Timestamp
    explanation: str
    explanation_json: str
    by_desk: bool
    def __init__(self, referral_id: _Optional[str] = ..., department: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., offer_id: _Optional[str] = ..., had_finess: _Optional[str] = ..., hold_id: _Optional[str] = ..., hold_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., explanation: _Optional[str] = ..., explanation_json: _Optional[str] = ..., by_desk: _Optional[bool] = ...) -> None: ...

class MatchExhausted(_message.Message):
    __slots__ = ("referral_id", "department", "occurred_at", "explanation", "explanation_json", "by_desk")
    REFERRAL_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_JSON_FIELD_NUMBER: _ClassVar[int]
    BY_DESK_FIELD_NUMBER: _ClassVar[int]
    referral_id: str
    department: str
    occurred_at: _timestamp_pb2.Timestamp
    explanation: str
    explanation_json: str
    by_desk: bool
    def __init__(self, referral_id: _Optional[str] = ..., department: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., explanation: _Optional[str] = ..., explanation_json: _Optional[str] = ..., by_desk: _Optional[bool] = ...) -> None: ...
