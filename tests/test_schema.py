"""Behaviour of the callback schema: what it accepts, what it refuses and how it converts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from xmlschema import XMLSchema11, XMLSchemaImportWarning

from relay.validate import schema as schema_module
from relay.validate.errors import SchemaViolation, UnsupportedSchema, Violation
from relay.validate.jsontree import MAX_DEPTH, json_to_tree
from relay.validate.schema import CallbackSchema, schema_path

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def schema() -> CallbackSchema:
    return CallbackSchema.load()


def parse(body: bytes | str) -> etree._Element:
    raw = body.encode() if isinstance(body, str) else body
    return etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))


def load(relative: str) -> etree._Element:
    return parse((DATA / relative).read_bytes())


def found(root: etree._Element, path: str) -> etree._Element:
    element = root.find(path)
    assert element is not None, path
    return element


def rejection(schema: CallbackSchema, root: etree._Element) -> Violation:
    with pytest.raises(SchemaViolation) as caught:
        schema.convert(root)
    assert caught.value.violations
    return caught.value.violations[0]


def job(*inner: str) -> str:
    return (
        "<Response><JobsDetail><JobId>j7c12d4be4c935a96bfe3fb23d1a491e9</JobId><Tag>Transcode</Tag>"
        f"<State>Success</State>{''.join(inner)}</JobsDetail></Response>"
    )


# ------------------------------------------------------------------------------ loading


def test_schema_path_finds_the_checked_out_schema() -> None:
    path = schema_path()
    assert path.name == "cos-callback.xsd"
    assert path.is_file()


def test_load_accepts_an_explicit_path(tmp_path: Path) -> None:
    copy = tmp_path / "copy.xsd"
    copy.write_bytes(schema_path().read_bytes())
    assert CallbackSchema.load(copy).convert(load("samples/transcode_failed.xml"))["JobsDetail"][0]["State"] == "Failed"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`CallbackSchema.load()` keeps the packaged schema's build in a folder of the test's own, as Python would."""
    folder = tmp_path / "cache"
    monkeypatch.setattr(schema_module, "CACHE", folder)
    monkeypatch.setattr("sys.dont_write_bytecode", False)
    return folder


def test_the_packaged_schema_is_built_once_then_read_back_from_its_cache(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = CallbackSchema.load()
    assert [path.suffix for path in cache.iterdir()] == [".pickle"]  # and no half-written file left
    builds: list[Path] = []
    build = schema_module._build_xsd

    def counted(source: Path) -> XMLSchema11:
        builds.append(source)
        return build(source)

    monkeypatch.setattr(schema_module, "_build_xsd", counted)
    again = CallbackSchema.load()
    failed = load("samples/transcode_failed.xml")
    for sample in sorted((DATA / "samples").glob("*.xml")):  # empty leaves too: dropped the same way
        assert again.convert(parse(sample.read_bytes())) == first.convert(parse(sample.read_bytes())), sample.name
    assert builds == []  # the fast path came from the cache
    # xmlschema's own validator is built from the XSD, only when first asked for, and it agrees.
    bogus = parse(job().replace("Success", "Bogus"))
    assert again.explain(bogus) == first.explain(bogus) != ()
    assert again.reference_is_valid(failed)
    assert builds == [schema_path().resolve()]


def test_a_changed_schema_or_a_damaged_cache_file_is_built_again(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xsd = tmp_path / "cos-callback.xsd"
    xsd.write_bytes(schema_path().read_bytes())
    monkeypatch.setattr(schema_module, "schema_path", lambda: xsd)
    assert CallbackSchema.load().convert(parse(job()))
    # The same XSD but for JobState's "Success", now "Succeeded": the cached build would accept the job.
    xsd.write_bytes(schema_path().read_bytes().replace(b'value="Success"', b'value="Succeeded"'))
    with pytest.raises(SchemaViolation):
        CallbackSchema.load().convert(parse(job()))
    assert len(list(cache.iterdir())) == 2
    for written in cache.iterdir():
        written.write_bytes(b"not a pickle")
    with pytest.raises(SchemaViolation):
        CallbackSchema.load().convert(parse(job()))


def test_nothing_is_cached_under_pythondontwritebytecode_nor_in_a_folder_it_cannot_write(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = load("samples/transcode_failed.xml")
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    assert CallbackSchema.load().convert(failed)
    assert not cache.exists()
    monkeypatch.setattr("sys.dont_write_bytecode", False)
    cache.write_text("a file where the folder would be")
    assert CallbackSchema.load().convert(failed)


def test_load_never_fetches_a_remote_import(tmp_path: Path) -> None:
    xsd = tmp_path / "remote.xsd"
    xsd.write_text(
        _mini_xsd('<xs:element name="A" type="xs:string" minOccurs="0"/>').replace(
            '<xs:element name="R">',
            '<xs:import namespace="urn:x" schemaLocation="http://schemas.example.invalid/x.xsd"/><xs:element name="R">',
        )
    )
    with (
        pytest.warns(XMLSchemaImportWarning, match="block access to remote resource"),
        pytest.raises(UnsupportedSchema, match="self-contained"),
    ):
        CallbackSchema.load(xsd)


def _mini_xsd(content: str, *, extra: str = "", wildcard: bool = True, assertions: str = "") -> str:
    any_ = (
        '<xs:any processContents="skip" namespace="##local" notQName="##definedSibling" '
        'minOccurs="0" maxOccurs="unbounded"/>'
        if wildcard
        else ""
    )
    return (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        f'<xs:element name="R"><xs:complexType><xs:all>{content}{any_}</xs:all>{assertions}'
        f"</xs:complexType></xs:element>{extra}</xs:schema>"
    )


UNSUPPORTED = {
    "sequence": _mini_xsd("").replace("<xs:all>", "<xs:sequence>").replace("</xs:all>", "</xs:sequence>"),
    "attribute": _mini_xsd("", assertions='<xs:attribute name="a" type="xs:string"/>'),
    "unknown assertion": _mini_xsd("", assertions='<xs:assert test="count(*) lt 3"/>'),
    "lax wildcard": _mini_xsd("").replace('processContents="skip"', 'processContents="lax"'),
    "wildcard without definedSibling": _mini_xsd("").replace(' notQName="##definedSibling"', ""),
    "default value": _mini_xsd('<xs:element name="A" type="xs:string" default="x" minOccurs="0"/>'),
    "unsupported builtin": _mini_xsd('<xs:element name="A" type="xs:date" minOccurs="0"/>'),
    "mixed content": _mini_xsd("").replace("<xs:complexType>", '<xs:complexType mixed="true">'),
    "second global element": _mini_xsd("", extra='<xs:element name="S" type="xs:string"/>'),
    "list type": _mini_xsd(
        '<xs:element name="A" minOccurs="0"><xs:simpleType><xs:list itemType="xs:string"/></xs:simpleType></xs:element>'
    ),
    "unknown value assertion": _mini_xsd(
        '<xs:element name="A" minOccurs="0"><xs:simpleType><xs:restriction base="xs:string">'
        '<xs:assertion test="string-length($value) lt 9"/></xs:restriction></xs:simpleType></xs:element>'
    ),
}


@pytest.mark.parametrize("feature", sorted(UNSUPPORTED))
def test_load_fails_loudly_on_xsd_features_the_compiler_does_not_implement(tmp_path: Path, feature: str) -> None:
    xsd = tmp_path / "unsupported.xsd"
    xsd.write_text(UNSUPPORTED[feature])
    with pytest.raises(UnsupportedSchema):
        CallbackSchema.load(xsd)


def test_decimal_bounds_compare_exactly_like_the_reference(tmp_path: Path) -> None:
    xsd = tmp_path / "bounded.xsd"
    xsd.write_text(
        _mini_xsd(
            '<xs:element name="D" minOccurs="0"><xs:simpleType><xs:restriction base="xs:decimal">'
            '<xs:maxInclusive value="100"/></xs:restriction></xs:simpleType></xs:element>'
        )
    )
    bounded = CallbackSchema.load(xsd)
    # As a float this rounds to 100.0; xmlschema compares decimals exactly.
    over = parse("<R><D>100.0000000000000000001</D></R>")
    assert not bounded.reference_is_valid(over)
    assert "maxInclusive" in rejection(bounded, over).rule
    assert bounded.convert(parse("<R><D>100</D></R>")) == {"D": 100.0}


# -------------------------------------------------------------------- valid bodies, typed


def test_transcode_sample_converts_to_typed_json(schema: CallbackSchema) -> None:
    doc = schema.convert(load("samples/transcode_success.xml"))
    assert doc["EventName"] == "TaskFinish"
    assert isinstance(doc["JobsDetail"], list)
    assert len(doc["JobsDetail"]) == 1
    detail = doc["JobsDetail"][0]
    assert "Message" not in detail  # <Message/>
    operation = detail["Operation"]
    media_format = operation["MediaInfo"]["Format"]
    assert media_format["Size"] == 85401276
    assert type(media_format["Size"]) is int
    assert media_format["Duration"] == 312.48
    assert type(media_format["Duration"]) is float
    assert operation["WatermarkTemplateId"] == ["t9932bad9a4ab357049d1b0f3203b6e061"]
    assert operation["JobLevel"] == 0
    video = operation["MediaInfo"]["Stream"]["Video"][0]
    assert video["Fps"] == "25.000000"  # rational / hex stay text
    assert video["CodecTag"] == "0x31637661"
    assert "Subtitle" not in operation["MediaInfo"]["Stream"]
    output_file = operation["MediaResult"]["OutputFile"]
    assert output_file["ObjectName"] == ["transcoded/2024/11/lecture-01_720p.mp4"]
    assert "ObjectPrefix" not in output_file
    assert detail["CreationTime"] == "2024-11-05T10:12:03+0800"


def test_snapshot_all_empty_media_info_and_empty_containers_are_omitted(schema: CallbackSchema) -> None:
    operation = schema.convert(load("samples/snapshot_success.xml"))["JobsDetail"][0]["Operation"]
    assert "MediaInfo" not in operation
    assert "UserData" not in operation
    output_file = operation["MediaResult"]["OutputFile"]
    assert "Md5Info" not in output_file
    assert output_file["ObjectName"] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert output_file["SpriteOutputFile"]["ObjectPrefix"] == "thumbs/product-demo/sprite-"


def test_multiple_jobs_details_become_a_list_in_order(schema: CallbackSchema) -> None:
    details = schema.convert(load("samples/multiple_jobs_detail.xml"))["JobsDetail"]
    assert [d["Tag"] for d in details] == ["Transcode", "SmartCover"]
    assert details[1]["Operation"]["SmartCover"] == {
        "Format": "jpg",
        "Width": 1280,
        "Height": 720,
        "Count": 3,
        "DeleteDuplicates": True,
    }


def test_nonexist_job_ids_alone_are_a_payload(schema: CallbackSchema) -> None:
    doc = schema.convert(load("samples/nonexist_job_ids_only.xml"))
    assert doc == {"NonExistJobIds": ["jc121da366e07d345ab63f1b8df836a19"]}


def test_jobs_detail_next_to_nonexist_job_ids_keeps_both(schema: CallbackSchema) -> None:
    doc = schema.convert(load("samples/extra/jobs_detail_with_nonexist_ids.xml"))
    assert "EventName" not in doc
    assert doc["JobsDetail"][0]["JobId"] == "j6e7f8091a2b3c4d5e6f708192a3b4c5d"
    assert doc["NonExistJobIds"] == [
        "jc121da366e07d345ab63f1b8df836a19,jd232eb477f18e456bc74f2c9e0e947b2",
        "jabcxxxxfeipplsdfwe",
    ]


def test_workflow_callback_converts_tasks_and_result_info(schema: CallbackSchema) -> None:
    run = schema.convert(load("samples/workflow_finish_success.xml"))["WorkflowExecution"][0]
    assert run["CreateTime"] == "2024-11-11 18:22:30+0800"
    assert [task["Type"] for task in run["Tasks"]] == ["Transcode", "SmartCover"]
    assert run["Tasks"][0]["ResultInfo"]["ObjectCount"] == 1
    assert run["Tasks"][1]["ResultInfo"]["ObjectInfo"][0]["ObjectName"].startswith("/ugc/")
    assert [header["Key"] for header in run["CosHeaders"]] == ["Content-Type", "x-cos-meta-uploader"]


def test_legacy_workflow_without_event_name_drops_empty_leaves_and_keeps_dashes(schema: CallbackSchema) -> None:
    doc = schema.convert(load("samples/extra/legacy_workflow_no_eventname.xml"))
    assert "EventName" not in doc
    run = doc["WorkflowExecution"][0]
    assert "WorkflowName" not in run
    assert "BucketId" not in run
    assert run["State"] == "Failed"
    assert "EndTime" not in run["Tasks"][0]  # <EndTime></EndTime>
    assert run["Tasks"][1]["StartTime"] == "-"
    assert run["Tasks"][1]["State"] == "Cancel"
    assert run["Tasks"][0]["TemplateName"] == "snapshot_1280*720_3"


def test_unset_times_leap_day_and_empty_numbers(schema: CallbackSchema) -> None:
    detail = schema.convert(load("samples/extra/unset_times_and_stream_extract.xml"))["JobsDetail"][0]
    assert detail["CreationTime"] == "2024-02-29T23:59:59-0500"
    assert detail["StartTime"] == "-"
    for unset in ("EndTime", "Progress", "QueueId"):
        assert unset not in detail
    operation = detail["Operation"]
    assert "TemplateId" not in operation
    assert "JobLevel" not in operation
    assert operation["Output"]["StreamExtract"] == [
        {"Index": 0, "Output": "extract/video.h264"},
        {"Index": 1, "Object": "extract/audio.aac"},
    ]
    assert operation["StreamExtract"] == {"Index": "0", "Output": "extract/video.h264"}  # undeclared: text


def test_speech_result_keeps_multiline_text_and_types_words(schema: CallbackSchema) -> None:
    detail = schema.convert(load("samples/speech_recognition_success.xml"))["JobsDetail"][0]
    result = detail["Operation"]["SpeechRecognitionResult"]
    assert result["AudioTime"] == 8.4216
    assert result["Result"][0].count("\n") == 1
    first = result["ResultDetail"][0]
    assert first["SpeechSpeed"] == 3.4
    assert first["StartMs"] == 620
    assert first["Words"][0] == {"OffsetEndMs": 520, "OffsetStartMs": 0, "VoiceType": 0, "Word": "今天"}


def test_flash_asr_snake_case_result_is_typed(schema: CallbackSchema) -> None:
    result = schema.convert(load("samples/extra/speech_flash_result.xml"))["JobsDetail"][0]["Operation"]
    sentence = result["SpeechRecognitionResult"]["FlashResult"][0]["sentence_list"][0]
    assert sentence["end_time"] == 2500
    assert [word["word"] for word in sentence["word_list"]] == ["你好", "。"]


def test_doc_process_page_info_sheets_and_negative_end_page(schema: CallbackSchema) -> None:
    operation = schema.convert(load("samples/extra/doc_process_sheets_url_input.xml"))["JobsDetail"][0]["Operation"]
    assert operation["DocProcess"]["EndPage"] == -1
    assert operation["DocProcess"]["DocWatermark"] == {"Text": "internal"}
    pages = operation["DocProcessResult"]["PageInfo"]
    assert [(page["PageNo"], page["X-SheetPics"]) for page in pages] == [(1, 3), (2, 1)]
    assert operation["DocProcessResult"]["WatermarkInfo"]["Etag"] == '"aa11"'


def test_tts_job_without_input_is_valid(schema: CallbackSchema) -> None:
    detail = schema.convert(load("samples/extra/tts_without_input.xml"))["JobsDetail"][0]
    assert "Input" not in detail
    assert detail["Operation"]["TtsConfig"]["Input"] == "欢迎使用数据万象语音合成。"


def test_gif_media_info_keeps_negative_level_and_rational_fps(schema: CallbackSchema) -> None:
    media = schema.convert(load("samples/extra/animation_gif_success.xml"))["JobsDetail"][0]["Operation"]["MediaInfo"]
    assert media["Stream"]["Video"][0]["Level"] == -99
    assert media["Stream"]["Video"][0]["AvgFps"] == "15/1"
    assert media["Format"]["Duration"] == 3.0
    assert type(media["Format"]["Duration"]) is float


@pytest.mark.parametrize(
    ("sample", "prefix"),
    [
        ("extra/pic_process_c_job.xml", "c"),
        ("extra/image_inspect_nested_state.xml", "c"),
        ("extra/translation_a_job.xml", "a"),
        ("doc_process_success.xml", "d"),
        ("speech_recognition_success.xml", "s"),
        ("extra/concat_fragments.xml", "j"),
    ],
)
def test_every_job_id_family_is_accepted(schema: CallbackSchema, sample: str, prefix: str) -> None:
    assert schema.convert(load(f"samples/{sample}"))["JobsDetail"][0]["JobId"].startswith(prefix)


def test_undeclared_job_specific_content_is_converted_generically(schema: CallbackSchema) -> None:
    concat = schema.convert(load("samples/extra/concat_fragments.xml"))["JobsDetail"][0]["Operation"]
    fragments = concat["ConcatTemplate"]["ConcatFragment"]
    assert [fragment["Mode"] for fragment in fragments] == ["Start", "End"]  # repeated name -> list
    assert concat["ConcatTemplate"]["Audio"] == {"Codec": "mp3"}  # single -> dict
    assert concat["UserData"] == '{"order":"A-1001","parts":2}'

    inspect = schema.convert(load("samples/extra/image_inspect_nested_state.xml"))["JobsDetail"][0]
    assert inspect["State"] == "Success"
    result = inspect["Operation"]["ImageInspectResult"]
    assert result["State"] == "Failed"  # untyped: text
    assert result["Suspicious"] == "true"
    assert "Message" not in result


def test_object_keys_are_never_decoded_or_trimmed(schema: CallbackSchema) -> None:
    detail = schema.convert(load("samples/extra/object_keys_escaped_and_chinese.xml"))["JobsDetail"][0]
    assert detail["Input"]["Object"] == '上传/课程\uff08第1讲\uff09 R&D <draft> "final" it\'s 100%+50%2B.mp4'
    assert detail["Input"]["CosHeaders"] == [{"Key": "x-cos-meta-title", "Value": "a & b < c > d"}]
    output_file = detail["Operation"]["MediaResult"]["OutputFile"]
    assert output_file["ObjectName"] == ['输出/课程\uff08第1讲\uff09 R&D "final" it\'s 100%+50%2B.mp4']
    assert detail["Operation"]["UserData"] == 'a=1&b=%20x&json={"k":"<v>"}&cdata=]]>'
    etag = schema.convert(load("samples/extra/pic_process_c_job.xml"))["JobsDetail"][0]["Operation"]
    assert etag["PicProcessResult"]["OriginalInfo"]["Etag"] == '"d5a4c2e1b0f9a8d7c6b5a4f3e2d1c0b9"'
    assert etag["PicProcessResult"]["ProcessResult"]["Etag"] == '"0f1e2d3c4b5a69788796a5b4c3d2e1f0"'


def test_whitespace_inside_string_leaves_is_kept(schema: CallbackSchema) -> None:
    doc = schema.convert(parse(job("<Input><Object>  a  b \n</Object></Input><Message> </Message>")))
    assert doc["JobsDetail"][0]["Input"]["Object"] == "  a  b \n"
    assert doc["JobsDetail"][0]["Message"] == " "


def test_comments_and_processing_instructions_are_ignored(schema: CallbackSchema) -> None:
    root = load("samples/extra/comments_and_processing_instructions.xml")
    detail = schema.convert(root)["JobsDetail"][0]
    assert detail["Tag"] == "Transcode"
    assert detail["State"] == "Success"
    assert detail["Input"]["Object"] == "ab.mp4"
    assert "Operation" not in detail
    assert schema.explain(root) == ()


def test_large_page_info_lists_convert_and_agree(schema: CallbackSchema) -> None:
    pages = "".join(f"<PageInfo><PageNo>{n}</PageNo><TgtUri>p/{n}.jpg</TgtUri></PageInfo>" for n in range(1, 3001))
    root = parse(
        job(f"<Operation><DocProcessResult><TotalPageCount>3000</TotalPageCount>{pages}</DocProcessResult></Operation>")
    )
    result = schema.convert(root)["JobsDetail"][0]["Operation"]["DocProcessResult"]
    assert len(result["PageInfo"]) == 3000
    assert result["PageInfo"][-1] == {"PageNo": 3000, "TgtUri": "p/3000.jpg"}
    assert schema.reference_is_valid(root)


# --------------------------------------------------------------------------- XML vs JSON


def _leaf_types(value: Any, prefix: str = "") -> dict[str, type]:
    if isinstance(value, dict):
        found: dict[str, type] = {}
        for key, item in value.items():
            found.update(_leaf_types(item, f"{prefix}/{key}"))
        return found
    if isinstance(value, list):
        return {f"{prefix}[]": list, **(_leaf_types(value[0], f"{prefix}[]") if value else {})}
    return {prefix: type(value)}


def test_json_variant_gives_the_same_types_as_its_xml_twin(schema: CallbackSchema) -> None:
    from_json = schema.convert(
        json_to_tree(json.loads((DATA / "samples/json/transcode_task_finish.json").read_bytes()))
    )
    from_xml = schema.convert(load("samples/workflow_task_finish.xml"))
    json_types, xml_types = _leaf_types(from_json), _leaf_types(from_xml)
    shared = json_types.keys() & xml_types.keys()
    assert len(shared) > 25
    assert {path: json_types[path] for path in shared} == {path: xml_types[path] for path in shared}
    assert from_json["JobsDetail"][0]["Operation"]["JobLevel"] == 0  # "0" in JSON


def test_empty_xml_elements_and_missing_json_keys_convert_alike(schema: CallbackSchema) -> None:
    doc = json.loads((DATA / "samples/json/transcode_task_finish.json").read_bytes())
    from_json = schema.convert(json_to_tree(doc))
    with_empties = json_to_tree(doc)
    etree.SubElement(found(with_empties, "JobsDetail"), "Message")
    etree.SubElement(found(with_empties, "JobsDetail/Operation/MediaResult/OutputFile"), "ObjectPrefix")
    media = etree.SubElement(found(with_empties, "JobsDetail/Operation"), "MediaInfo")
    etree.SubElement(etree.SubElement(media, "Stream"), "Subtitle")
    assert schema.convert(parse(etree.tostring(with_empties))) == from_json


def test_json_to_tree_follows_the_mapping_rule() -> None:
    root = json_to_tree(
        {
            "EventName": "TaskFinish",
            "JobsDetail": [{"Size": 12, "Ratio": 0.5, "Flag": True, "Off": False, "None": None}, {}],
        }
    )
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["EventName", "JobsDetail", "JobsDetail"]
    first = root[1]
    assert [(child.tag, child.text) for child in first] == [
        ("Size", "12"),
        ("Ratio", "0.5"),
        ("Flag", "true"),
        ("Off", "false"),
        ("None", None),
    ]
    assert len(root[2]) == 0
    assert len(json_to_tree({"Tasks": []})) == 0


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([{"EventName": "TaskFinish"}], "top level"),
        ("TaskFinish", "top level"),
        ({"Job Id": "x"}, "valid XML element name"),
        ({"1st": "x"}, "valid XML element name"),
        ({"{urn:x}JobId": "x"}, "valid XML element name"),
        ({"x:JobId": "x"}, "valid XML element name"),
        ({"": "x"}, "valid XML element name"),
        ({"Tasks": [[{"Type": "Transcode"}]]}, "array inside an array"),
        ({"Message": "bell \x07"}, "cannot be carried by XML"),
    ],
)
def test_json_to_tree_refuses_what_xml_cannot_express(doc: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        json_to_tree(doc)


def test_json_to_tree_refuses_absurd_nesting() -> None:
    doc: dict[str, Any] = {}
    inner = doc
    for _ in range(MAX_DEPTH + 1):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(ValueError, match="nested deeper"):
        json_to_tree(doc)


# ------------------------------------------------------------------------ refused bodies


def test_invalid_state_is_rejected_with_enum_rule_and_path(schema: CallbackSchema) -> None:
    root = load("bad/invalid_state.xml")
    with pytest.raises(SchemaViolation) as caught:
        schema.convert(root)
    violation = caught.value.violations[0]
    assert violation == Violation(
        "/Response/JobsDetail[1]/State",
        "value 'Exploded' is not one of Submitted, Running, Success, Failed, Pause, Cancel",
    )
    assert str(caught.value) == f"{violation.path}: {violation.rule}"
    assert schema.explain(root) == (violation,)


def test_wrong_root_is_rejected_by_name(schema: CallbackSchema) -> None:
    violation = rejection(schema, load("bad/wrong_root.xml"))
    assert violation.path == "/Result"
    assert "must be Response" in violation.rule


# file -> (path of the first violation, fragment of its rule)
REFUSALS = {
    "jobid_with_child_element.xml": ("/Response/JobsDetail[1]/JobId", "child element x not allowed"),
    "state_exploded.xml": ("/Response/JobsDetail[1]/State", "value 'Exploded' is not one of"),
    "state_lowercase_success.xml": ("/Response/JobsDetail[1]/State", "value 'success' is not one of"),
    "timestamp_2024_02_30.xml": ("/Response/JobsDetail[1]/CreationTime", "not a date: 2024-02-30T10:00:00+0800"),
    "timestamp_2023_02_29.xml": ("/Response/JobsDetail[1]/CreationTime", "not a date: 2023-02-29T10:00:00+0800"),
    "timestamp_hour_25.xml": ("/Response/JobsDetail[1]/EndTime", "does not match the JobTimestamp pattern"),
    "timestamp_minute_60.xml": ("/Response/JobsDetail[1]/StartTime", "does not match the JobTimestamp pattern"),
    "timestamp_free_text.xml": ("/Response/JobsDetail[1]/CreationTime", "'yesterday at noon'"),
    "timestamp_rfc3339_offset.xml": ("/Response/JobsDetail[1]/CreationTime", "JobTimestamp pattern"),
    "workflow_time_in_job_form.xml": ("/Response/WorkflowExecution[1]/CreateTime", "WorkflowTimestamp pattern"),
    "workflow_state_exploded.xml": ("/Response/WorkflowExecution[1]/State", "is not one of Success, Failed"),
    "workflow_missing_runid.xml": ("/Response/WorkflowExecution[1]", "missing required element RunId"),
    "empty_response.xml": ("/Response", "no JobsDetail, WorkflowExecution or NonExistJobIds"),
    "event_name_only.xml": ("/Response", "no JobsDetail, WorkflowExecution or NonExistJobIds"),
    "unknown_element_in_response_with_no_payload.xml": ("/Response", "no JobsDetail"),
    "namespaced_root.xml": ("/{http://www.w3.org/2001/XMLSchema-instance}Response", "must be Response"),
    "attribute_on_jobsdetail.xml": ("/Response/JobsDetail[1]", "attribute id not allowed"),
    "attribute_on_leaf.xml": ("/Response/JobsDetail[1]/JobId", "attribute type not allowed"),
    "xsi_nil_on_message.xml": ("/Response/JobsDetail[1]/Message", "XMLSchema-instance}nil not allowed"),
    "attribute_in_unknown_element.xml": ("/Response/JobsDetail[1]/Operation/Transcode", "attribute codec"),
    "missing_jobid.xml": ("/Response/JobsDetail[1]", "missing required element JobId"),
    "empty_jobid.xml": ("/Response/JobsDetail[1]/JobId", "JobId pattern"),
    "jobid_with_trailing_space.xml": ("/Response/JobsDetail[1]/JobId", "JobId pattern"),
    "two_state_elements.xml": ("/Response/JobsDetail[1]/State[2]", "State may occur only once"),
    "text_in_operation.xml": ("/Response/JobsDetail[1]/Operation", "text not allowed in element-only content"),
    "mixed_text_in_unknown_element.xml": ("/Response/JobsDetail[1]/Operation/Animation", "text not allowed"),
    "event_name_foo.xml": ("/Response/EventName", "value 'Foo' is not one of TaskFinish, WorkflowFinish"),
    "tag_with_space.xml": ("/Response/JobsDetail[1]/Tag", "Tag pattern"),
    "size_with_unit.xml": ("/Response/JobsDetail[1]/Operation/MediaInfo/Format/Size", "'12MB'"),
    "integer_with_underscore.xml": ("/Response/JobsDetail[1]/Operation/MediaInfo/Format/Size", "'1_000'"),
    "decimal_with_inner_space.xml": ("/Response/JobsDetail[1]/Operation/MediaInfo/Format/Duration", "'1 2'"),
    "boolean_yes.xml": ("/Response/JobsDetail[1]/Operation/SmartCover/DeleteDuplicates", "not a boolean"),
    "progress_over_100.xml": ("/Response/JobsDetail[1]/Progress", "maxInclusive 100"),
    "namespaced_unknown_element.xml": (
        "/Response/JobsDetail[1]/Operation/{urn:example}Transcode",
        "unexpected element",
    ),
    "namespaced_inside_unknown_element.xml": (
        "/Response/JobsDetail[1]/Operation/Transcode/{urn:example}Codec",
        "namespaced element",
    ),
    "cosheaders_unexpected_child.xml": ("/Response/JobsDetail[1]/Input/CosHeaders[1]/Note", "unexpected element Note"),
    "nonexist_job_ids_empty.xml": ("/Response/NonExistJobIds[1]", "JobIdList pattern"),
    "queue_id_wrong_family.xml": ("/Response/JobsDetail[1]/QueueId", "QueueIdValue pattern"),
}


def test_every_invalid_file_has_an_expected_refusal() -> None:
    assert {path.name for path in (DATA / "invalid").glob("*.xml")} == set(REFUSALS)


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_invalid_bodies_are_refused_with_a_precise_path_and_reason(schema: CallbackSchema, name: str) -> None:
    root = load(f"invalid/{name}")
    path, fragment = REFUSALS[name]
    violation = rejection(schema, root)
    assert violation.path == path
    assert fragment in violation.rule
    assert path in {found.path for found in schema.explain(root)}  # the slow path points there too


def test_explain_is_empty_for_valid_bodies(schema: CallbackSchema) -> None:
    for sample in sorted((DATA / "samples").glob("*.xml")):
        assert schema.explain(load(f"samples/{sample.name}")) == ()


def test_hostile_xsi_type_is_refused_by_the_reference_instead_of_crashing(schema: CallbackSchema) -> None:
    root = parse(job('<Message xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="1"/>'))
    assert not schema.reference_is_valid(root)
    assert schema.explain(root)
    assert "not allowed" in rejection(schema, root).rule


def test_absurdly_deep_hand_built_trees_are_refused_not_crashed(schema: CallbackSchema) -> None:
    root = parse(job("<Operation/>"))
    node = found(root, "JobsDetail/Operation")
    for _ in range(5000):
        node = etree.SubElement(node, "Nested")
    assert rejection(schema, root).rule == "document nested too deeply"


def test_entity_reference_nodes_in_hand_built_trees_are_refused_by_both_paths(schema: CallbackSchema) -> None:
    root = parse(job("<Message>a</Message>"))
    found(root, "JobsDetail/Message").append(etree.Entity("secret"))
    violation = rejection(schema, root)
    assert violation.path == "/Response/JobsDetail[1]/Message"
    assert "entity reference" in violation.rule
    assert not schema.reference_is_valid(root)
    assert schema.explain(root)[0].path == violation.path


def test_schema_violation_needs_at_least_one_violation() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SchemaViolation(())
    error = SchemaViolation((Violation("/Response", "a"), Violation("/Response/X", "b")))
    assert str(error) == "/Response: a"
