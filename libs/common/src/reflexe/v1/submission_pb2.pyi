from reflexe.v1 import referral_pb2 as _referral_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitReferral(_message.Message):
    __slots__ = ("request", "submitted_by")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    request: _referral_pb2.ReferralRequest
    submitted_by: str
    def __init__(self, request: _Optional[_Union[_referral_pb2.ReferralRequest, _Mapping]] = ..., submitted_by: _Optional[str] = ...) -> None: ...
