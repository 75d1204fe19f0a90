"""The study's HTML pages (Jinja2, autoescaped): consent and instructions, one trial, thanks, errors."""

from __future__ import annotations

from jinja2 import DictLoader, Environment, select_autoescape

BASE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Image description study</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>
body{font-family:sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}
.caption{font-size:1.4em;margin:.6em 0 1em;padding:.6em;background:#f4f4f4;border-radius:6px}
.grid{display:grid;grid-template-columns:repeat(5,1fr);gap:10px}
.grid button{border:3px solid #ddd;border-radius:6px;padding:4px;background:#fff;cursor:pointer}
.grid button:hover,.grid button:focus{border-color:#1565c0}.grid img{width:100%;display:block}
.key{font-size:.9em;color:#555}progress{width:100%;height:14px}.code{font-size:1.6em;font-weight:bold}
</style></head><body>{% block body %}{% endblock %}</body></html>"""

CONSENT = """{% extends "base" %}{% block body %}<h1>Which picture is described?</h1>
<p>In each of {{ n_trials }} short trials you read one description and see ten pictures. Click the picture
the description is about, or press its number key (1-9, and 0 for the tenth). Go with your first
impression; there is no time limit, and a trial cannot be changed once answered.</p>
<p>Participation is voluntary. We record only your choices and how long each took, with no name or
address. You can stop at any time; with the link of your session you can come back and continue.</p>
<form method="post" action="/start"><button type="submit" id="consent">I agree, start</button></form>
{% endblock %}"""

TRIAL = """{% extends "base" %}{% block body %}
<progress id="progress" max="{{ total }}" value="{{ done }}"></progress>
<div class="key">trial {{ done + 1 }} of {{ total }}</div>
<div class="caption" id="caption">{{ caption }}</div>
<form method="post" action="{{ answer_url }}" id="answer">
<input type="hidden" name="position" value="{{ position }}">
<input type="hidden" name="response_ms" id="response_ms" value="0">
<div class="grid">{% for url in images %}<button type="submit" name="choice" value="{{ loop.index0 }}"
 data-key="{{ loop.index % 10 }}"><img src="{{ url }}" alt="picture {{ loop.index }}">
<span class="key">{{ loop.index % 10 }}</span></button>{% endfor %}</div></form>
<script>
const shown = performance.now(), form = document.getElementById('answer');
form.addEventListener('submit', () => {
  document.getElementById('response_ms').value = Math.round(performance.now() - shown); });
document.addEventListener('keydown', event => {
  const button = form.querySelector(`button[data-key="${event.key}"]`);
  if (button && !form.dataset.sent) { form.dataset.sent = '1'; form.requestSubmit(button); } });
</script>{% endblock %}"""

THANKS = """{% extends "base" %}{% block body %}<h1>Thank you</h1>
<p>You answered all {{ total }} trials. Your completion code:</p><p class="code" id="code">{{ code }}</p>
{% endblock %}"""

MESSAGE = """{% extends "base" %}{% block body %}<h1>{{ title }}</h1><p>{{ message }}</p>{% endblock %}"""

ENV = Environment(loader=DictLoader({"base": BASE, "consent": CONSENT, "trial": TRIAL, "thanks": THANKS,
                                     "message": MESSAGE}), autoescape=select_autoescape(default=True))


def render(name: str, **context) -> str:
    return ENV.get_template(name).render(**context)
