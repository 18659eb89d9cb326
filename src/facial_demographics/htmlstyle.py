"""The one stylesheet of the self-contained HTML reports (evaluation, population summaries): inlined, so a
report opens offline and can be mailed as one file."""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;
color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:40px}
.meta{color:#666;margin:2px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:150px}
.card .v{font-size:1.35em;font-weight:600} .card .l{color:#666;font-size:.85em}
.ci{font-size:.65em;color:#666;font-weight:400}
.plots{display:flex;flex-wrap:wrap;gap:8px} img.plot{max-width:100%;border:1px solid #eee}
table.metrics{border-collapse:collapse;margin:10px 0}
table.metrics td,table.metrics th{border:1px solid #ddd;padding:4px 10px;text-align:right}
table.metrics th:first-child{text-align:left}
.gaps li{margin:3px 0}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
.gallery figure{margin:0;width:140px;font-size:.78em;text-align:center}
.gallery img{width:128px;height:128px;object-fit:contain;background:#f4f4f4;border-radius:4px}
.gallery .missing{width:128px;height:128px;background:#eee;display:flex;align-items:center;
justify-content:center;color:#999}
.key{color:#888;word-break:break-all}
"""
