"""The report's HTML pages as Jinja2 templates (autoescaped): one base page, an experiment report,
the claims ledger and a search report's body."""

import jinja2

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #bbb;padding:4px 8px;text-align:left}
th{background:#eef}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}.warning{color:#a60;font-weight:bold}
.confirmed{color:#060;font-weight:bold}.refuted{color:#a00;font-weight:bold}.inconclusive{color:#666}.unanswerable{color:#7b5ea7}.stable-untrained{color:#b36b00;font-weight:bold}"""

TEMPLATES = {
    "page.html": """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>{{ style }}</style></head><body><h1>{{ title }}</h1>{% block body %}{{ body }}{% endblock %}</body></html>
""",
    "macros.html": """{% macro table(header, rows, css) -%}
<table class="{{ css }}"><thead><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row in rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{%- endmacro %}
{% macro claims(rows) -%}
<table class="claims"><thead><tr><th>id</th><th>claim</th><th>source</th><th>test</th><th>verdict</th><th>evidence</th><th>registered</th></tr></thead><tbody>
{% for c in rows %}<tr><td>{{ c.id }}</td><td>{{ c.text }}</td><td>{{ c.source }}</td><td>{{ c.test }}</td>
<td class="{{ c.verdict | replace('stable but does not train', 'stable-untrained') }}">{{ c.verdict | upper }}{% if c.exploratory %} (exploratory){% endif %}</td><td>{{ c.evidence }}</td><td>{{ c.registered }}</td></tr>
{% endfor %}</tbody></table>
{%- endmacro %}
{% macro figures(plots) %}{% for p in plots %}<h2>{{ p.title }}</h2><img alt="{{ p.title }}" src="{{ p.src }}">{% endfor %}{% endmacro %}
""",
    "experiment.html": """{% extends "page.html" %}{% import "macros.html" as m %}{% block body %}
<p>{{ description }}</p><p>{{ note }}</p>
<h2>Provenance</h2>{% if warning %}<p class="warning">Warning: {{ warning }}.</p>{% endif %}
<ul>{% for s in sources %}<li>{{ s }}</li>{% endfor %}</ul>
{% for t in tables %}<h2>{{ t.title }}</h2>{% if t.note %}<p>{{ t.note }}</p>{% endif %}{{ m.table(t.header, t.rows, t.css) }}{% endfor %}
{% if claims %}<h2>Claims</h2>{{ m.claims(claims) }}{% endif %}
{{ m.figures(plots) }}
{% endblock %}""",
    "ledger.html": """{% extends "page.html" %}{% import "macros.html" as m %}{% block body %}
<p>{{ tally }}. {{ rule }}</p><p>{{ family }}</p><p>{{ verdict_rules }}</p>
<p>Judging rules changed after a look at results:</p><ul>{% for c in changes %}<li>{{ c }}</li>{% endfor %}</ul>
{{ m.claims(claims) }}{{ m.figures(plots) }}
<h2>Published results</h2>{{ m.table(published_header, published, "published") }}
<h2>Reports</h2><ul>{% for name, link in links %}<li><a href="{{ link }}">{{ name }}</a></li>{% endfor %}</ul>
{% endblock %}""",
    "search.html": """{% extends "page.html" %}{% import "macros.html" as m %}{% block body %}
<p>{{ headline }}</p>{{ m.table(header, rows, "trials") }}{{ m.figures(plots) }}
{% endblock %}""",
}

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.DictLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
)


def render(name, **context) -> str:
    """The page `name` filled with `context` (every value escaped)."""
    return ENVIRONMENT.get_template(name).render(style=STYLE, **context)
