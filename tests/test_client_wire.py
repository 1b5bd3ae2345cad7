"""The wire shapes of every api-version, without a network: requests built, answers parsed."""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remote_kernel.sessions import (
    SUPPORTED_API_VERSIONS,
    BadRequest,
    ConfigurationError,
    ExecutionStatus,
    PayloadTooLarge,
    PoolFull,
    RemoteAuthenticationError,
    RemoteFileNotFound,
    ServiceUnavailable,
    SessionLost,
    SessionNotFound,
    UnexpectedResponse,
)
from remote_kernel.sessions.wire import (
    V1_API_VERSIONS,
    V2_API_VERSIONS,
    clamp_timeout,
    error_from_response,
    multipart_for,
    parse_time,
    traceback_exception,
    wire_for,
)

PNG = b"\x89PNG\r\n\x1a\nfake"


def test_v1_execution_request_is_wrapped_in_properties_with_lowercase_enums():
    for version in V1_API_VERSIONS:
        call = wire_for(version).execute("1+1", 30)
        assert (call.method, call.path) == ("POST", "code/execute")
        assert call.json == {"properties": {"codeInputType": "inline", "executionType": "synchronous",
                                            "code": "1+1", "timeoutInSeconds": 30}}


def test_v2_execution_request_is_flat_and_asks_jupyter_repr_only_where_the_version_has_it():
    for version in V2_API_VERSIONS:
        call = wire_for(version).execute("1+1", 30, jupyter_repr=True)
        assert (call.method, call.path) == ("POST", "executions")
        assert call.json["code"] == "1+1" and call.json["timeoutInSeconds"] == 30
        assert call.json["executionType"] == "Synchronous"
        assert ("returnJupyterFormatExecutionResult" in call.json) == (version == "2025-10-02-preview")


def test_timeout_is_sent_as_whole_seconds_between_1_and_220():
    assert [clamp_timeout(s) for s in (0, 0.2, 1, 10.5, 220, 500)] == [1, 1, 1, 11, 220, 220]


def test_v1_success_keeps_json_value_and_empty_string_means_no_result():
    wire = wire_for("2024-02-02-preview")
    done = wire.parse_execution({"$id": "1", "properties": {"$id": "2", "status": "Success", "stdout": "hi\n",
                                                            "stderr": "", "result": 2, "executionTimeInMilliseconds": 4}},
                                session_guid="pod-1")
    assert done.succeeded and done.stdout == "hi\n" and done.result == 2 and done.has_result
    assert done.duration_ms == 4 and done.session_guid == "pod-1"
    quiet = wire.parse_execution({"properties": {"status": "Success", "stdout": "", "stderr": "", "result": ""}})
    assert quiet.succeeded and not quiet.has_result and quiet.result is None
    none = wire.parse_execution({"properties": {"status": "Success", "result": None}})
    assert none.has_result and none.result is None


def test_v1_failure_takes_exception_name_and_message_from_the_traceback():
    traceback = ("\x1b[0;31m---------------------------------------------------------------------------\x1b[0m\n"
                 "\x1b[0;31mZeroDivisionError\x1b[0m                         Traceback (most recent call last)\n"
                 "Cell In[1], line 1\n----> 1 1/0\n\n"
                 "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero\n")
    failed = wire_for("2024-08-02-preview").parse_execution(
        {"properties": {"status": "Failure", "stdout": "", "stderr": traceback, "result": ""}})
    assert failed.failed
    assert (failed.error.name, failed.error.message) == ("ZeroDivisionError", "division by zero")
    assert failed.error.traceback == traceback


def test_traceback_exception_reads_bare_and_dotted_names():
    assert traceback_exception("Traceback...\nKeyboardInterrupt\n") == ("KeyboardInterrupt", "")
    assert traceback_exception("x\nmod.sub.CustomError: bad: really\n") == ("mod.sub.CustomError", "bad: really")
    assert traceback_exception("") == (None, "")
    assert traceback_exception("something odd happened") == (None, "something odd happened")


def test_v2_failure_uses_the_structured_error_and_keeps_the_traceback():
    body = {"id": "e1", "status": "Failed", "result": {"stdout": "", "stderr": "Traceback...\nNameError: x",
                                                        "executionResult": ""},
            "error": {"code": "NameError", "message": "name 'x' is not defined"}}
    failed = wire_for("2025-10-02-preview").parse_execution(body)
    assert failed.failed and failed.id == "e1"
    assert (failed.error.name, failed.error.message) == ("NameError", "name 'x' is not defined")
    assert "Traceback" in failed.error.traceback


@pytest.mark.parametrize("code", ["ExecutionTimeout", "SessionLost"])
def test_pool_verdicts_arrive_as_failed_executions_named_by_their_code(code):
    body = {"id": "e1", "status": "Failed", "result": {"stdout": "partial", "stderr": ""},
            "error": {"code": code, "message": "what the pool says"}}
    failed = wire_for("2024-10-02-preview").parse_execution(body)
    assert failed.failed and failed.error.name == code and failed.stdout == "partial"


def test_image_in_the_result_slot_becomes_an_image_not_a_value():
    value = {"type": "image", "format": "png", "base64_data": base64.b64encode(PNG).decode()}
    v2 = wire_for("2025-02-02-preview").parse_execution(
        {"id": "e", "status": "Succeeded", "result": {"stdout": "", "stderr": "", "executionResult": value}})
    v1 = wire_for("2024-02-02-preview").parse_execution({"properties": {"status": "Success", "result": value}})
    for execution in (v1, v2):
        assert execution.image.format == "png" and execution.image.data == PNG
        assert not execution.has_result


def test_running_execution_is_not_terminal_and_unknown_status_is_unexpected():
    wire = wire_for("2025-10-02-preview")
    running = wire.parse_execution({"id": "e", "status": "Running", "rawResult": {"stdout": "e"}})
    assert running.status is ExecutionStatus.RUNNING and not running.status.is_terminal
    assert running.stdout == "" and not running.has_result
    assert wire.parse_execution({"id": "e", "status": "succeeded", "result": {}}).succeeded  # case-insensitive
    with pytest.raises(UnexpectedResponse, match="Pending"):
        wire.parse_execution({"id": "e", "status": "Pending"})
    with pytest.raises(UnexpectedResponse):
        wire.parse_execution(["not", "an", "object"])


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_file_names_with_spaces_and_unicode_are_percent_encoded(version):
    wire = wire_for(version)
    download = wire.download("/mnt/data/données été.csv")
    encoded = "donn%C3%A9es%20%C3%A9t%C3%A9.csv"
    expected = f"files/content/{encoded}" if version in V1_API_VERSIONS else f"files/{encoded}/content"
    assert download.path == expected
    assert wire.delete_file("a b.txt").path == "files/a%20b.txt"
    assert wire.file_info("#1?.txt").path == "files/%231%3F.txt"


def test_v2_names_in_a_folder_travel_as_the_path_parameter():
    wire = wire_for("2025-10-02-preview")
    call = wire.download("reports/q 1.csv")
    assert call.path == "files/q%201.csv/content" and call.params == {"path": "reports"}
    upload, filename = wire.upload("/mnt/data/reports/q 1.csv")
    assert upload.path == "files" and upload.params == {"path": "reports"} and filename == "q 1.csv"
    assert wire.list_files("/mnt/data/reports").params == {"path": "reports"}
    assert wire.list_files(None).params == {}


def test_v1_cannot_list_a_folder_and_says_which_versions_can():
    with pytest.raises(BadRequest, match="2025-10-02-preview"):
        wire_for("2024-02-02-preview").list_files("reports")
    assert wire_for("2024-02-02-preview").list_files("/mnt/data").path == "files"


@given(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=40))
def test_any_file_name_survives_the_trip_through_the_url(name):
    for version in ("2024-02-02-preview", "2025-10-02-preview"):
        path = wire_for(version).delete_file(name).path
        assert path.isascii() and " " not in path and "?" not in path and "#" not in path
        assert unquote(path.removeprefix("files/")) == name


def test_v1_file_list_reads_properties_and_strips_mnt_data():
    body = {"$id": "1", "value": [
        {"$id": "2", "properties": {"$id": "3", "filename": "/mnt/data/a.csv", "size": 16,
                                    "lastModifiedTime": "2024-04-23T19:36:14.5834567Z"}},
        {"properties": {"filename": "b c.txt", "size": 0, "lastModifiedTime": None}}]}
    files, next_link = wire_for("2024-08-02-preview").parse_file_list(body)
    assert [f.name for f in files] == ["a.csv", "b c.txt"] and next_link is None
    assert files[0].size == 16
    assert files[0].modified == datetime(2024, 4, 23, 19, 36, 14, 583456, tzinfo=timezone.utc)
    assert wire_for("2024-02-02-preview").parse_upload(body).name == "a.csv"


def test_v2_file_entries_are_flat_and_know_folders():
    wire = wire_for("2024-10-02-preview")
    files, next_link = wire.parse_file_list({"value": [
        {"name": "a.csv", "type": "File", "sizeInBytes": 16, "lastModifiedAt": "2025-01-01T00:00:00Z",
         "contentType": "text/csv"},
        {"name": "sub", "type": "directory", "lastModifiedAt": "2025-01-01T00:00:00Z"}], "nextLink": "files?skip=2"})
    assert [(f.name, f.is_directory, f.size) for f in files] == [("a.csv", False, 16), ("sub", True, None)]
    assert files[0].content_type == "text/csv" and next_link == "files?skip=2"
    assert wire.parse_upload({"$id": "3", "name": "t.txt", "type": "file", "sizeInBytes": 5,
                              "lastModifiedAt": "x"}).size == 5
    with pytest.raises(UnexpectedResponse):
        wire.parse_file_list({"files": []})


def test_times_in_the_services_formats_parse_and_garbage_is_none():
    assert parse_time("2025-02-02T10:00:00.1234567Z") == datetime(2025, 2, 2, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert parse_time("2025-02-02T10:00:00+00:00").tzinfo is not None
    assert parse_time("yesterday") is None and parse_time(None) is None


def test_session_routes_exist_from_2025_02_02_and_delete_works_for_every_version():
    for version in SUPPORTED_API_VERSIONS:
        wire = wire_for(version)
        delete = wire.delete_session()
        assert (delete.method, delete.path) == ("DELETE", "session")
        if version in ("2025-02-02-preview", "2025-10-02-preview"):
            assert delete.api_version is None and wire.session_info().path == "session"
        else:
            assert delete.api_version == "2025-10-02-preview"
            with pytest.raises(BadRequest, match="2025-02-02-preview or 2025-10-02-preview"):
                wire.session_info()
    info = wire_for("2025-02-02-preview").parse_session_info(
        {"identifier": "nb-1", "createdAt": "2025-01-01T00:00:00Z", "expireAt": "2025-01-01T00:05:00Z", "etag": "c1"})
    assert info.identifier == "nb-1" and info.expires_at.minute == 5 and info.etag == "c1"


def test_unknown_api_version_is_a_configuration_error_naming_the_supported_ones():
    with pytest.raises(ConfigurationError, match="2024-02-02-preview") as caught:
        wire_for("2023-01-01")
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("status, code, expected", [
    (401, None, RemoteAuthenticationError),
    (403, None, RemoteAuthenticationError),
    (429, "SessionsCountExceedsLimit", PoolFull),
    (404, "SessionsCountExceedsLimit", PoolFull),
    (404, "SessionWithIdentifierNotFound", SessionNotFound),
    (404, "ExecutionNotFound", SessionLost),
    (404, "FileNotFound", RemoteFileNotFound),
    (400, "InvalidIdentifier", BadRequest),
    (400, "UnsupportedApiVersion", BadRequest),
    (413, None, PayloadTooLarge),
    (503, None, ServiceUnavailable),
    (404, None, UnexpectedResponse),
    (500, None, UnexpectedResponse),
])
def test_error_answers_map_to_the_error_tree(status, code, expected):
    body = b'{"error": {"code": "%s", "message": "the pool says why"}}' % (code or "").encode()
    headers = {"x-ms-error-code": code} if code else {}
    error = error_from_response(status, headers, body, "doing the thing")
    assert type(error) is expected
    assert error.status_code == status and error.code == (code or None)
    assert error.message.startswith("Doing the thing failed")


def test_authentication_error_says_which_role_and_audience_to_check():
    error = error_from_response(403, {}, b"", "executing the cell", auth_hint="The token came from X.")
    assert "Azure ContainerApps Session Executor" in error.message
    assert "https://dynamicsessions.io" in error.message and "The token came from X." in error.message


def test_bare_404_means_what_the_operation_looks_for():
    assert isinstance(error_from_response(404, {}, b"", "reading a.csv", missing="file"), RemoteFileNotFound)
    assert isinstance(error_from_response(404, {}, b"", "reading the session", missing="session"), SessionNotFound)


def test_bad_request_keeps_the_pools_message_and_unexpected_keeps_the_first_bytes():
    error = error_from_response(400, {}, b'{"error":{"code":"X","message":"code is required"}}', "executing")
    assert "code is required" in error.message
    error = error_from_response(418, {}, b"<html>teapot" + b"x" * 1000, "executing")
    assert "418" in error.message and "<html>teapot" in error.message and len(error.message) < 600


def test_multipart_framing_encodes_a_unicode_filename_and_escapes_quotes():
    frame = multipart_for('été "q".csv')
    boundary = frame.content_type.split("boundary=")[1]
    assert frame.head.startswith(f"--{boundary}\r\n".encode())
    assert 'filename="été %22q%22.csv"'.encode() in frame.head
    assert frame.tail == f"\r\n--{boundary}--\r\n".encode()
