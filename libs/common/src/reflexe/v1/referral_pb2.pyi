import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Source(_message.Message):
    __slots__ = ("kind", "finess", "unit", "prescriber_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    FINESS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    PRESCRIBER_ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    finess: str
    unit: str
    prescriber_id: str
    def __init__(self, kind: _Optional[str] = ..., finess: _Optional[str] = ..., unit: _Optional[str] = ..., prescriber_id: _Optional[str] = ...) -> None: ...

class Patient(_message.Message):
    __slots__ = ("pseudonym", "birth_year", "sex", "care_commune", "place_of_care", "ehpad_finess")
    PSEUDONYM_FIELD_NUMBER: _ClassVar[int]
    BIRTH_YEAR_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    CARE_COMMUNE_FIELD_NUMBER: _ClassVar[int]
    PLACE_OF_CARE_FIELD_NUMBER: _ClassVar[int]
    EHPAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    pseudonym: str
    birth_year: int
    sex: str
    care_commune: str
    place_of_care: str
    ehpad_finess: str
    def __init__(self, pseudonym: _Optional[str] = ..., birth_year: _Optional[int] = ..., sex: _Optional[str] = ..., care_commune: _Optional[str] = ..., place_of_care: _Optional[str] = ..., ehpad_finess: _Optional[str] = ...) -> None: ...

class Clinical(_message.Message):
    __slots__ = ("main_mpp", "associated_mpp", "karnofsky", "equipment", "palliative", "urgency", "planned_date", "expected_duration_days")
    MAIN_MPP_FIELD_NUMBER: _ClassVar[int]
    ASSOCIATED_MPP_FIELD_NUMBER: _ClassVar[int]
    KARNOFSKY_FIELD_NUMBER: _ClassVar[int]
    EQUIPMENT_FIELD_NUMBER: _ClassVar[int]
    PALLIATIVE_FIELD_NUMBER: _ClassVar[int]
    URGENCY_FIELD_NUMBER: _ClassVar[int]
    PLANNED_DATE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DURATION_DAYS_FIELD_NUMBER: _ClassVar[int]
    main_mpp: str
    associated_mpp: _containers.RepeatedScalarFieldContainer[str]
    karnofsky: int
    equipment: _containers.RepeatedScalarFieldContainer[str]
    palliative: bool
    urgency: str
    planned_date: str
    expected_duration_days: int
    def __init__(self, main_mpp: _Optional[str] = ..., associated_mpp: _Optional[_Iterable[str]] = ..., karnofsky: _Optional[int] = ..., equipment: _Optional[_Iterable[str]] = ..., palliative: _Optional[bool] = ..., urgency: _Optional[str] = ..., planned_date: _Optional[str] = ..., expected_duration_days: _Optional[int] = ...) -> None: ...

class Conditions(_message.Message):
    __slots__ = ("patient_consent", "gp_agreement", "caregiver_present")
    PATIENT_CONSENT_FIELD_NUMBER: _ClassVar[int]
    GP_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    CAREGIVER_PRESENT_FIELD_NUMBER: _ClassVar[int]
    patient_consent: bool
    gp_agreement: bool
    caregiver_present: bool
    def __init__(self, patient_consent: _Optional[bool] = ..., gp_agreement: _Optional[bool] = ..., caregiver_present: _Optional[bool] = ...) -> None: ...

class AvisHad(_message.Message):
    __slots__ = ("eligible", "reason", "text")
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    eligible: bool
    reason: str
    text: str
    def __init__(self, eligible: _Optional[bool] = ..., reason: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ReferralRequest(_message.Message):
    __slots__ = ("referral_id", "department", "source", "patient", "clinical", "conditions", "ed_arrival_at", "requested_at", "desired_admission_at", "avis")
    REFERRAL_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    CLINICAL_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    ED_ARRIVAL_AT_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    DESIRED_ADMISSION_AT_FIELD_NUMBER: _ClassVar[int]
    AVIS_FIELD_NUMBER: _ClassVar[int]
    referral_id: str
    department: str
    source: Source
    patient: Patient
    clinical: Clinical
    conditions: Conditions
    ed_arrival_at: _timestamp_pb2.Timestamp
    requested_at: _timestamp_pb2.Timestamp
    desired_admission_at: _timestamp_pb2.Timestamp
    avis: AvisHad
    def __init__(self, referral_id: _Optional[str] = ..., department: _Optional[str] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., patient: _Optional[_Union[Patient, _Mapping]] = ..., clinical: _Optional[_Union[Clinical, _Mapping]] = ..., conditions: _Optional[_Union[Conditions, _Mapping]] = ..., ed_arrival_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., desired_admission_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., avis: _Optional[_Union[AvisHad, _Mapping]] = ...) -> None: ...

class ReferralEventHeader(_message.Message):
    __slots__ = ("referral_id", "department", "occurred_at", "actor")
    REFERRAL_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    referral_id: str
    department: str
    occurred_at: _timestamp_pb2.Timestamp
    actor: str
    def __init__(self, referral_id: _Optional[str] = ..., department: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ...) -> None: ...

class ReferralRequested(_message.Message):
    __slots__ = ("header", "request", "missing_conditions")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    MISSING_CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    request: ReferralRequest
    missing_conditions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., request: _Optional[_Union[ReferralRequest, _Mapping]] = ..., missing_conditions: _Optional[_Iterable[str]] = ...) -> None: ...

class ReferralRequestUpdated(_message.Message):
    __slots__ = ("header", "conditions", "changed_fields", "missing_conditions")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    conditions: Conditions
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    missing_conditions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., conditions: _Optional[_Union[Conditions, _Mapping]] = ..., changed_fields: _Optional[_Iterable[str]] = ..., missing_conditions: _Optional[_Iterable[str]] = ...) -> None: ...

class ReferralCompleted(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ...) -> None: ...

class ReferralDeclaredIneligible(_message.Message):
    __slots__ = ("header", "reason", "text")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    reason: str
    text: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., reason: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class OfferMade(_message.Message):
    __slots__ = ("header", "offer_id", "had_finess", "hold_until", "explanation", "by_desk", "explanation_json")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    HOLD_UNTIL_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    BY_DESK_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_JSON_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    offer_id: str
    had_finess: str
    hold_until: _timestamp_pb2.Timestamp
    explanation: str
    by_desk: bool
    explanation_json: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., offer_id: _Optional[str] = ..., had_finess: _Optional[str] = ..., hold_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., explanation: _Optional[str] = ..., by_desk: _Optional[bool] = ..., explanation_json: _Optional[str] = ...) -> None: ...

class OfferAccepted(_message.Message):
    __slots__ = ("header", "offer_id", "had_finess", "pending_evaluation")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    PENDING_EVALUATION_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    offer_id: str
    had_finess: str
    pending_evaluation: bool
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., offer_id: _Optional[str] = ..., had_finess: _Optional[str] = ..., pending_evaluation: _Optional[bool] = ...) -> None: ...

class EvaluationConfirmed(_message.Message):
    __slots__ = ("header", "offer_id", "had_finess")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    offer_id: str
    had_finess: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., offer_id: _Optional[str] = ..., had_finess: _Optional[str] = ...) -> None: ...

class AcceptanceWithdrawn(_message.Message):
    __slots__ = ("header", "offer_id", "had_finess", "reason", "text")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    offer_id: str
    had_finess: str
    reason: str
    text: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., offer_id: _Optional[str] = ..., had_finess: _Optional[str] = ..., reason: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class AvisGiven(_message.Message):
    __slots__ = ("header", "eligible", "reason", "text")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    eligible: bool
    reason: str
    text: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., eligible: _Optional[bool] = ..., reason: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class OfferDeclined(_message.Message):
    __slots__ = ("header", "offer_id", "had_finess", "reason", "text")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    offer_id: str
    had_finess: str
    reason: str
    text: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., offer_id: _Optional[str] = ..., had_finess: _Optional[str] = ..., reason: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class OfferExpired(_message.Message):
    __slots__ = ("header", "offer_id", "had_finess")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    offer_id: str
    had_finess: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., offer_id: _Optional[str] = ..., had_finess: _Optional[str] = ...) -> None: ...

class OfferWithdrawn(_message.Message):
    __slots__ = ("header", "offer_id", "had_finess", "why")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    offer_id: str
    had_finess: str
    why: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., offer_id: _Optional[str] = ..., had_finess: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...

class OfferUnanswered(_message.Message):
    __slots__ = ("header", "offer_id", "had_finess")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFER_ID_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    offer_id: str
    had_finess: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., offer_id: _Optional[str] = ..., had_finess: _Optional[str] = ...) -> None: ...

class ReferralEscalated(_message.Message):
    __slots__ = ("header", "why")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    why: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., why: _Optional[str] = ...) -> None: ...

class SearchWidened(_message.Message):
    __slots__ = ("header", "departments")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENTS_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    departments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., departments: _Optional[_Iterable[str]] = ...) -> None: ...

class DeskOfferRequested(_message.Message):
    __slots__ = ("header", "had_finess")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    had_finess: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., had_finess: _Optional[str] = ...) -> None: ...

class PatientAdmitted(_message.Message):
    __slots__ = ("header", "had_finess", "place_of_care")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    PLACE_OF_CARE_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    had_finess: str
    place_of_care: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., had_finess: _Optional[str] = ..., place_of_care: _Optional[str] = ...) -> None: ...

class PatientDischarged(_message.Message):
    __slots__ = ("header", "had_finess")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HAD_FINESS_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    had_finess: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., had_finess: _Optional[str] = ...) -> None: ...

class ReferralCancelled(_message.Message):
    __slots__ = ("header", "reason", "text")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    reason: str
    text: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., reason: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class AdmissionOverdue(_message.Message):
    __slots__ = ("header", "due_at", "planned_date")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    PLANNED_DATE_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    due_at: _timestamp_pb2.Timestamp
    planned_date: str
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., planned_date: _Optional[str] = ...) -> None: ...

class EdExitRecorded(_message.Message):
    __slots__ = ("header", "exited_at")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EXITED_AT_FIELD_NUMBER: _ClassVar[int]
    header: ReferralEventHeader
    exited_at: _timestamp_pb2.Timestamp
    def __init__(self, header: _Optional[_Union[ReferralEventHeader, _Mapping]] = ..., exited_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
