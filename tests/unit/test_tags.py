"""Model names (Ollama's grammar) and tag parts, table-driven."""

from __future__ import annotations

import pytest

from server.errors import InvalidName
from server.registry.quantized import derived_name, tag_label
from server.registry.tags import (
    FILE_TYPE_LABELS,
    QUANT_LABELS,
    ModelName,
    TagParts,
    name_from_parts,
    normalize_quant,
    parse_name,
    parse_tag,
)

D_HOST, D_NS = "registry.ollama.ai", "library"

# text, (host, namespace, model, tag), display, TagParts(size, variant, quant, extra)
VALID: list[tuple[str, tuple[str, str, str, str], str, TagParts]] = [
    (
        "smollm2:135m",
        (D_HOST, D_NS, "smollm2", "135m"),
        "smollm2:135m",
        TagParts("135m", None, None, ()),
    ),
    (
        "smollm2",
        (D_HOST, D_NS, "smollm2", "latest"),
        "smollm2:latest",
        TagParts(None, None, None, ("latest",)),
    ),
    (
        "smollm2:135m-instruct-q4_1",
        (D_HOST, D_NS, "smollm2", "135m-instruct-q4_1"),
        "smollm2:135m-instruct-q4_1",
        TagParts("135m", "instruct", "Q4_1", ()),
    ),
    (
        "llama3.1:405b-instruct-q4_K_S",
        (D_HOST, D_NS, "llama3.1", "405b-instruct-q4_K_S"),
        "llama3.1:405b-instruct-q4_K_S",
        TagParts("405b", "instruct", "Q4_K_S", ()),
    ),
    (
        "llama3.1:8b-instruct-q3_K_L",
        (D_HOST, D_NS, "llama3.1", "8b-instruct-q3_K_L"),
        "llama3.1:8b-instruct-q3_K_L",
        TagParts("8b", "instruct", "Q3_K_L", ()),
    ),
    (
        "llama3.1:70b-instruct-q5_0",
        (D_HOST, D_NS, "llama3.1", "70b-instruct-q5_0"),
        "llama3.1:70b-instruct-q5_0",
        TagParts("70b", "instruct", "Q5_0", ()),
    ),
    (
        "qwen2.5:32b-instruct-fp16",
        (D_HOST, D_NS, "qwen2.5", "32b-instruct-fp16"),
        "qwen2.5:32b-instruct-fp16",
        TagParts("32b", "instruct", "F16", ()),
    ),
    (
        "qwen2.5:1.5b-instruct-q4_K",
        (D_HOST, D_NS, "qwen2.5", "1.5b-instruct-q4_K"),
        "qwen2.5:1.5b-instruct-q4_K",
        TagParts("1.5b", "instruct", "Q4_K_M", ()),
    ),
    (
        "mixtral:8x7b-instruct-v0.1-q4_K_M",
        (D_HOST, D_NS, "mixtral", "8x7b-instruct-v0.1-q4_K_M"),
        "mixtral:8x7b-instruct-v0.1-q4_K_M",
        TagParts("8x7b", "instruct", "Q4_K_M", ("v0.1",)),
    ),
    (
        "llama3.1:8b-text-q8_0",
        (D_HOST, D_NS, "llama3.1", "8b-text-q8_0"),
        "llama3.1:8b-text-q8_0",
        TagParts("8b", "text", "Q8_0", ()),
    ),
    (
        "gemma2:9b-it-q5_K",
        (D_HOST, D_NS, "gemma2", "9b-it-q5_K"),
        "gemma2:9b-it-q5_K",
        TagParts("9b", "it", "Q5_K_M", ()),
    ),
    (
        "codellama:7b-code-q3_K",
        (D_HOST, D_NS, "codellama", "7b-code-q3_K"),
        "codellama:7b-code-q3_K",
        TagParts("7b", "code", "Q3_K_M", ()),
    ),
    (
        "phi3:3.8b-mini-128k-instruct-q4_0",
        (D_HOST, D_NS, "phi3", "3.8b-mini-128k-instruct-q4_0"),
        "phi3:3.8b-mini-128k-instruct-q4_0",
        TagParts("3.8b", "instruct", "Q4_0", ("mini", "128k")),
    ),
    (
        "qwen2.5-coder:7B-Base-Q6_K",
        (D_HOST, D_NS, "qwen2.5-coder", "7B-Base-Q6_K"),
        "qwen2.5-coder:7B-Base-Q6_K",
        TagParts("7b", "base", "Q6_K", ()),
    ),
    (
        "tinyllama:1.1b-chat-v1-q2_K",
        (D_HOST, D_NS, "tinyllama", "1.1b-chat-v1-q2_K"),
        "tinyllama:1.1b-chat-v1-q2_K",
        TagParts("1.1b", "chat", "Q2_K", ("v1",)),
    ),
    (
        "llava:13b-v1.6-vicuna-q4_0",
        (D_HOST, D_NS, "llava", "13b-v1.6-vicuna-q4_0"),
        "llava:13b-v1.6-vicuna-q4_0",
        TagParts("13b", None, "Q4_0", ("v1.6", "vicuna")),
    ),
    (
        "deepseek-r1:671b",
        (D_HOST, D_NS, "deepseek-r1", "671b"),
        "deepseek-r1:671b",
        TagParts("671b", None, None, ()),
    ),
    (
        "nomic-embed-text:v1.5",
        (D_HOST, D_NS, "nomic-embed-text", "v1.5"),
        "nomic-embed-text:v1.5",
        TagParts(None, None, None, ("v1.5",)),
    ),
    ("x:IQ4_XS", (D_HOST, D_NS, "x", "IQ4_XS"), "x:IQ4_XS", TagParts(None, None, "IQ4_XS", ())),
    ("x:bf16", (D_HOST, D_NS, "x", "bf16"), "x:bf16", TagParts(None, None, "BF16", ())),
    ("x:fp32", (D_HOST, D_NS, "x", "fp32"), "x:fp32", TagParts(None, None, "F32", ())),
    (
        "x:Q4_K_XL",
        (D_HOST, D_NS, "x", "Q4_K_XL"),
        "x:Q4_K_XL",
        TagParts(None, None, None, ("Q4_K_XL",)),
    ),
    (
        "hf.co/bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M",
        ("hf.co", "bartowski", "Qwen2.5-7B-Instruct-GGUF", "Q4_K_M"),
        "hf.co/bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M",
        TagParts(None, None, "Q4_K_M", ()),
    ),
    (
        "localhost:5000/ns/model:tag",
        ("localhost:5000", "ns", "model", "tag"),
        "localhost:5000/ns/model:tag",
        TagParts(None, None, None, ("tag",)),
    ),
    (
        "localhost:5000/ns/model",
        ("localhost:5000", "ns", "model", "latest"),
        "localhost:5000/ns/model:latest",
        TagParts(None, None, None, ("latest",)),
    ),
    (
        "jmorganca/mistral:7b-q4_0",
        (D_HOST, "jmorganca", "mistral", "7b-q4_0"),
        "jmorganca/mistral:7b-q4_0",
        TagParts("7b", None, "Q4_0", ()),
    ),
    (
        "registry.ollama.ai/library/smollm2:135m",
        (D_HOST, D_NS, "smollm2", "135m"),
        "smollm2:135m",
        TagParts("135m", None, None, ()),
    ),
    (
        "Registry.Ollama.AI/Library/SmolLM2:135M",
        ("Registry.Ollama.AI", "Library", "SmolLM2", "135M"),
        "SmolLM2:135M",
        TagParts("135m", None, None, ()),
    ),
    (
        "example.com/library/mistral:7b",
        ("example.com", D_NS, "mistral", "7b"),
        "example.com/library/mistral:7b",
        TagParts("7b", None, None, ()),
    ),
    (
        "host.example:8080/ns_1/m-2:t.3",
        ("host.example:8080", "ns_1", "m-2", "t.3"),
        "host.example:8080/ns_1/m-2:t.3",
        TagParts(None, None, None, ("t.3",)),
    ),
    (
        "_private:v1",
        (D_HOST, D_NS, "_private", "v1"),
        "_private:v1",
        TagParts(None, None, None, ("v1",)),
    ),
    ("9:9b", (D_HOST, D_NS, "9", "9b"), "9:9b", TagParts("9b", None, None, ())),
    (
        "a" * 80,
        (D_HOST, D_NS, "a" * 80, "latest"),
        "a" * 80 + ":latest",
        TagParts(None, None, None, ("latest",)),
    ),
    (
        "m:" + "t" * 80,
        (D_HOST, D_NS, "m", "t" * 80),
        "m:" + "t" * 80,
        TagParts(None, None, None, ("t" * 80,)),
    ),
]

# text, a fragment the message must contain
INVALID: list[tuple[str, str]] = [
    ("", "empty"),
    ("../x", "'..'"),
    ("a/../../b", "'..'"),
    ("a..b", "'..'"),
    ("x:..", "'..'"),
    ("/etc/passwd", "absolute paths"),
    ("model@sha256:" + "0" * 64, "'@'"),
    ("model:tag@sha256-" + "0" * 64, "'@'"),
    ("a\\b", "backslashes"),
    ("C:\\models\\x.gguf", "backslashes"),
    ("a" * 81, "the model is 81 characters long; the limit is 80"),
    ("m:" + "t" * 81, "the tag is 81 characters long"),
    ("n" * 81 + "/m", "the namespace is 81 characters long"),
    ("h" * 351 + "/n/m", "the host is 351 characters long; the limit is 350"),
    (".hidden", "the model '.hidden' must start with an ASCII letter"),
    ("-dash", "the model '-dash' must start"),
    ("a:-b", "the tag '-b' must start"),
    ("a:", "the tag after ':' is empty"),
    (":tag", "the model is empty"),
    ("a/", "the model is empty"),
    ("a/b/", "the model is empty"),
    ("a//b", "the namespace is empty"),
    ("a/./b", "the namespace '.' must start"),
    ("https://hf.co/a/b:c", "URL schemes"),
    ("a b", "whitespace"),
    (" smollm2", "whitespace"),
    ("a\tb", "whitespace"),
    ("model:tag\x00", "control characters"),
    ("a/b/c/d", "at most three"),
    ("hf.co/model", "the namespace 'hf.co' may contain only letters, digits, '_' and '-' (no '.')"),
    ("model:ta/g", "the namespace 'model:ta'"),
    ("model:tag:x", "the model 'model:tag'"),
    ("m:t!", "the tag 't!' may contain only"),
    ("%2e%2e/x", "the namespace '%2e%2e' must start"),
    ("ünïcode", "must start with an ASCII letter"),
    ("mö:del", "the model 'mö'"),
    ("~/.ollama/x", "the host '~' must start"),
]


@pytest.mark.parametrize(
    ("text", "parts", "display", "tag_parts"), VALID, ids=[v[0][:40] for v in VALID]
)
def test_valid_names(
    text: str, parts: tuple[str, str, str, str], display: str, tag_parts: TagParts
) -> None:
    name = parse_name(text)
    assert name.parts == parts
    assert (name.host, name.namespace, name.model, name.tag) == parts
    assert name.display == display
    assert str(name) == display
    assert name.key == tuple(p.lower() for p in parts)
    assert name.full == f"{parts[0]}/{parts[1]}/{parts[2]}:{parts[3]}"
    assert parse_tag(name.tag) == tag_parts
    # The display form parses back to the same name (ignoring case for default parts).
    assert parse_name(name.display).key == name.key


@pytest.mark.parametrize(("text", "fragment"), INVALID, ids=[repr(t[:30]) for t, _ in INVALID])
def test_invalid_names(text: str, fragment: str) -> None:
    with pytest.raises(InvalidName) as caught:
        parse_name(text)
    assert fragment in caught.value.message
    assert caught.value.code == "invalid_model_name"
    assert "\n" not in caught.value.message


def test_table_covers_enough_names() -> None:
    assert len(VALID) + len(INVALID) >= 40


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidName, match="must be a string"):
        parse_name(None)  # type: ignore[arg-type]


def test_names_match_case_insensitively_but_keep_case() -> None:
    stored = parse_name("SmolLM2:135M")
    asked = parse_name("smollm2:135m")
    assert stored.key == asked.key
    assert stored != asked  # the dataclass keeps the case; `key` is the comparison
    assert stored.display == "SmolLM2:135M"


def test_name_from_parts_validates_each_part() -> None:
    assert name_from_parts(D_HOST, D_NS, "m", "t") == ModelName(D_HOST, D_NS, "m", "t")
    with pytest.raises(InvalidName, match="the namespace"):
        name_from_parts(D_HOST, "..", "m", "t")
    with pytest.raises(InvalidName, match="the tag"):
        name_from_parts(D_HOST, D_NS, "m", ".tmp-123-partial")


@pytest.mark.parametrize(
    ("label", "canonical"),
    [
        ("q4_K_M", "Q4_K_M"),
        ("Q4_K_M", "Q4_K_M"),
        ("q4_k_m", "Q4_K_M"),
        ("q3_K", "Q3_K_M"),
        ("q4_K", "Q4_K_M"),
        ("q5_K", "Q5_K_M"),
        ("fp16", "F16"),
        ("FP32", "F32"),
        ("f16", "F16"),
        ("bf16", "BF16"),
        ("iq2_xxs", "IQ2_XXS"),
        ("tq1_0", "TQ1_0"),
        ("mxfp4_moe", "MXFP4_MOE"),
        ("q2_k_s", "Q2_K_S"),
    ],
)
def test_normalize_quant(label: str, canonical: str) -> None:
    assert normalize_quant(label) == canonical


@pytest.mark.parametrize(
    "text", ["", "latest", "instruct", "q4", "q9_0", "Q4_K_XL", "q6_K_M", "8b"]
)
def test_normalize_quant_rejects_non_quants(text: str) -> None:
    assert normalize_quant(text) is None


def test_every_canonical_label_round_trips() -> None:
    expected = {
        "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M",
        "Q5_0", "Q5_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ1_S", "IQ1_M", "IQ2_XXS",
        "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS",
        "TQ1_0", "TQ2_0", "F16", "BF16", "F32", "MXFP4_MOE",
    }  # fmt: skip
    assert expected == QUANT_LABELS == set(FILE_TYPE_LABELS.values())
    for label in expected:
        assert normalize_quant(label.lower()) == label


def test_parse_tag_first_of_each_kind_wins() -> None:
    assert parse_tag("q4_0-q8_0-7b-13b-chat-instruct") == TagParts(
        "7b", "chat", "Q4_0", ("q8_0", "13b", "instruct")
    )
    assert parse_tag("") == TagParts(None, None, None, ())
    assert parse_tag("8B-Instruct") == TagParts("8b", "instruct", None, ())


# --- names of quantized models --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "label", "derived"),
    [
        ("smollm2:135m", "F16", "smollm2:135m-f16"),
        ("smollm2:135m-f16", "Q4_K_M", "smollm2:135m-q4_K_M"),
        ("smollm2:135m-instruct-q4_1", "Q8_0", "smollm2:135m-instruct-q8_0"),
        ("llama3.1:8b-instruct-fp16", "Q5_K_M", "llama3.1:8b-instruct-q5_K_M"),
        ("mine", "Q2_K", "mine:q2_K"),
        ("hf.co/org/Repo-GGUF:Q4_K_M", "IQ4_XS", "hf.co/org/Repo-GGUF:iq4_XS"),
        ("ns/model:v1", "BF16", "ns/model:v1-bf16"),
    ],
)
def test_derived_name_replaces_or_appends_the_quant(source: str, label: str, derived: str) -> None:
    assert derived_name(parse_name(source), label).display == derived


@pytest.mark.parametrize(
    ("label", "tag"),
    [
        ("Q4_K_M", "q4_K_M"),
        ("Q8_0", "q8_0"),
        ("F16", "f16"),
        ("IQ4_NL", "iq4_NL"),
        ("Q2_K", "q2_K"),
    ],
)
def test_tag_label_is_ollama_spelling(label: str, tag: str) -> None:
    assert tag_label(label) == tag
    assert normalize_quant(tag) == label
