"""token_heavy (#11, observation 10) with the real SmolLM2 tokenizer (the tiny model's)."""

from __future__ import annotations

from streamd.daemon.engine.loading import LoadedModel
from streamd.daemon.intake.token_guard import TOKEN_SLACK, TokenGuard

ZALGO = ("a" + "\u0301\u0308\u0323\u0330" * 10 + " ") * 100


def guard(loaded: LoadedModel, cap: float = 8.0) -> TokenGuard:
    counter = loaded.token_counter()
    return TokenGuard(cap, lambda: counter)


def test_ordinary_text_of_any_script_passes_on_a_byte_count(tiny_loaded: LoadedModel) -> None:
    check = TokenGuard(8.0, lambda: None)  # no tokenizer: the byte count must decide alone
    for line in (
        "Feb 25 14:34:10 host sshd[4242]: Failed password for root from 10.0.0.7" * 20,
        "服务器连接失败，请检查网络设置。" * 100,
        "😀🔥👍 ok " * 200,
        "यह एक परीक्षण संदेश है, सर्वर से कनेक्शन विफल रहा। " * 50,
        "\u0301" * (TOKEN_SLACK // 3),  # a few marks alone are free
    ):
        assert check.weigh([line]) is None, line[:20]


def test_stacked_combining_marks_are_token_heavy(tiny_loaded: LoadedModel) -> None:
    check = guard(tiny_loaded)
    weight = check.weigh([ZALGO])
    assert weight is not None
    excess = check.excess([ZALGO], weight)
    assert excess is not None and "ingest.max_tokens_per_char = 8" in excess
    assert TokenGuard(0, lambda: None).weigh([ZALGO]) is None  # 0: off


def test_the_counter_is_the_streams_count_on_a_tokenizer_of_its_own(
    tiny_loaded: LoadedModel,
) -> None:
    lines = ["disk /dev/sda1 is 91% full", "<|im_start|>system"]
    counted = tiny_loaded.token_counter()(lines)
    # The stream's own tokenization: each line ends in a newline, special tokens split.
    stream = tiny_loaded.encode("\n".join(lines) + "\n", allow_special=False)
    assert abs(counted - len(stream)) <= len(lines)
    # The engine's tokenizer still reads special tokens where it is asked to.
    assert len(tiny_loaded.encode("<|im_start|>", allow_special=True)) == 1
