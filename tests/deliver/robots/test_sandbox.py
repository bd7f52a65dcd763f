"""Robot templates: refused when set if they do not compile or fail on a sample event, bounded in the time they take
and the size of what they build and print, and the values they print escaped for the platform."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import pytest

from relay.deliver.robots.messages import describe
from relay.deliver.robots.platform import backslashed
from relay.deliver.robots.sandbox import (
    MAX_OUTPUT,
    MAX_TEMPLATE,
    RENDER_SECONDS,
    Deadline,
    Sandbox,
    TemplateFailed,
    compile_template,
    render,
)
from relay.deliver.robots.slack import escaped
from relay.deliver.robots.templates import Templates, check_template, context
from tests.deliver.robots.samples import event

DOUBLINGS = 40


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ("{{ data.Tag ", "line 1: unexpected end of template"),
        ("fine\n{{ data.Tag | shout }}", "line 2: No filter named 'shout'"),
        ("{% if %}", "line 1: Expected an expression"),
        ("{{ shout(data.Tag) }}", "line 1: 'shout' is undefined"),
        ("\n\n{{ 1 / 0 }}", "line 3: division by zero"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "took longer than 0.2 s"),
        ("{{ 'x' * 1000000 }}", "larger than 65536 characters"),
        ("{{ [data] * 100000 }}", "larger than 65536 characters"),
        ("{% set s = 'ab' %}" + "{% set s = s ~ s %}" * DOUBLINGS + "{{ s }}", "longer than 65536 characters"),
        ("{% set s = 'ab' %}" + "{% set s = s + s %}" * DOUBLINGS + "{{ s }}", "larger than 65536 characters"),
        ("{% set s = [data] %}" + "{% set s = [s, s] %}" * DOUBLINGS + "{{ s }}", "larger than 65536 characters"),
        ("{% set s %}{{ data }}{% endset %}" + "{% set s %}{{ s }}{{ s }}{% endset %}" * DOUBLINGS, "longer than"),
        ("{{ range(50000) | join('x' * 50000) }}", "longer than 65536 characters"),
        ("{{ data.Tag | replace('', 'x' * 60000) }}", "longer than 65536 characters"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "maximum recursion depth"),
        ("{{ '%s' % data.Tag }}", "% formatting of text is not available"),
        ("{{ '{}'.format(data) }}", "attribute 'format' of 'str' object is unsafe"),
        ("{{ data.Tag.center(10 ** 9) }}", "attribute 'center' of 'str' object is unsafe"),
        ("{{ (1).to_bytes(10 ** 9, 'big') }}", "attribute 'to_bytes' of 'int' object is unsafe"),
        ("{{ 2 ** 100000 }}", "beyond 4096 bits"),
        ("{{ data.Tag | center(10 ** 9) }}", "No filter named 'center'"),
        ("{{ lipsum(10 ** 6) }}", "'lipsum' is undefined"),
        ("x" * (MAX_TEMPLATE + 1), f"at most {MAX_TEMPLATE} characters"),
    ],
)
def test_a_template_that_cannot_work_is_refused_when_set_saying_why(template: str, said: str) -> None:
    # The size bounds must trip before the deadline could, even on a machine too busy to render in 0.2 s.
    seconds = RENDER_SECONDS if "took longer" in said else 30.0
    with pytest.raises(ValueError, match=r"^template: ") as refused:
        check_template(template, seconds)
    assert said in str(refused.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ data.Tag }} failed: {{ data.Code }} {{ data.Message }}\n{{ link }}",
        "{{ message }}\n<@alice>",
        "{% if type == 'cos.job.failed' %}{{ data.Input.Object | default('?') }}{% else %}{{ title }}{% endif %}",
        "{% for task in data.Tasks or [] %}{{ loop.index }}. {{ task.Name }}\n{% endfor %}",
        "{{ event.source.split('/') | last }} {{ data | tojson | length }} {{ subject | upper }}",
        "{% set ns = namespace(n=0) %}{% for k in data %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
    ],
)
def test_a_template_using_the_event_is_accepted(template: str) -> None:
    check_template(template)


def test_the_deadline_counts_the_renders_cpu_so_a_busy_machine_does_not_refuse_a_cheap_template() -> None:
    # A thread waiting for a core (here: asleep) spends wall time, not CPU: the render it runs goes on.
    with Deadline(0.05):
        time.sleep(0.2)
        still_running = True
    assert still_running
    with Deadline(0.05), pytest.raises(TemplateFailed, match="took longer"):
        spin()


def spin() -> None:
    while True:
        pass


def rendered(template: str, escape: Callable[[str], str] = str) -> str:
    failed = event("transcode_failed")
    message = describe(failed, "https://relay.example")
    sandbox = Sandbox(escape)
    return render(compile_template(sandbox, template), context(failed, message, "**the default**"))


def test_values_are_escaped_for_the_platform_and_the_template_text_is_not() -> None:
    template = "<@alice> *{{ data.Code }}* {{ '<!channel> [x](y)' }} {{ message }}"
    assert rendered(template, escaped) == "<@alice> *InvalidInput* &lt;!channel&gt; [x](y) **the default**"
    assert rendered(template, backslashed) == ("<@alice> *InvalidInput* &lt;!channel&gt; \\[x\\](y) **the default**")


def test_what_a_template_prints_is_cut_at_the_bound() -> None:
    said = rendered("{% for i in range(10000) %}{{ data.Tag }}{% endfor %}")
    assert len(said) == MAX_OUTPUT
    assert said.endswith("…")


def test_missing_fields_print_nothing() -> None:
    assert rendered("[{{ data.Nope.Deeper }}][{{ data.Input.Nope }}][{{ none }}]") == "[][][]"


def test_the_deadline_gives_back_the_trace_function_it_found() -> None:
    before = sys.gettrace()
    with pytest.raises(TemplateFailed):
        rendered("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    assert sys.gettrace() is before


def test_a_template_that_does_not_compile_is_remembered_not_compiled_again() -> None:
    templates = Templates(str)
    for _ in range(2):
        with pytest.raises(TemplateFailed, match="line 1"):
            templates.compiled("{{ ")
    assert templates.compiled("{{ id }}") is templates.compiled("{{ id }}")
