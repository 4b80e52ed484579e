"""The index of an explained dataset as a table (``results.csv``) and a static gallery (``index.html``).

``results.csv`` has the columns of :data:`COLUMNS`, one row per input × method × class, in the order of
``results.jsonl``; for feature inputs ``features`` lists ``name:relevance`` ranked by ``|relevance|``
(``;``-separated). ``index.html`` is one self-contained page (inline CSS and JavaScript, no server, no
network; the pictures are the PNGs beside it, by relative path): a grid of cards with filters by class
explained and by method, and a search by input name. "All methods" shows one card per comparison figure;
choosing a method shows that method's heatmap per input (its figure for feature inputs).
"""
from __future__ import annotations

import csv
import html
import io
import json

from .fileio import atomic_write

CSV = "results.csv"
HTML = "index.html"
COLUMNS = ("input", "sample", "method", "predicted", "predicted_label", "predicted_score", "class", "label",
           "score", "logit", "rank", "figure", "heatmap", "relevance_file", "relevance_sum", "relevance_min",
           "relevance_max", "relevance_abs_mean", "positive_share", "features")


def _cell(row, key):
    value = row.get(key)
    if key == "features" and value:
        return ";".join(f"{f['name']}:{f['relevance']:.6g}" for f in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def write_csv(path, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in rows:
        w.writerow([_cell(row, k) for k in COLUMNS])
    return atomic_write(path, lambda f: f.write(buf.getvalue().encode("utf-8")), what="table")


_KEEP = ("input", "sample", "method", "predicted", "predicted_label", "predicted_score", "class", "label", "score",
         "figure", "heatmap", "relevance_sum")


def write_html(path, rows, *, title="onnxplain results") -> str:
    data = json.dumps([{k: r.get(k) for k in _KEEP} for r in rows]).replace("</", "<\\/")
    page = _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)
    return atomic_write(path, lambda f: f.write(page.encode("utf-8")), what="gallery")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:10px 16px;display:flex;
 gap:16px;align-items:center;flex-wrap:wrap;z-index:1}
header h1{font-size:17px;margin:0 12px 0 0}
label{display:flex;gap:6px;align-items:center}
select,input{font:inherit;padding:3px 6px}
#count{color:#666;margin-left:auto}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(var(--w,300px),1fr));gap:12px;padding:16px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;display:flex;flex-direction:column;gap:6px}
.card img{width:100%;border-radius:3px;background:#fff}
.card .name{font-weight:600;word-break:break-all}
.card .meta{color:#555;font-size:12.5px}
.card a{color:inherit;text-decoration:none}
.empty{padding:40px;color:#666}
</style></head><body>
<header><h1>__TITLE__</h1>
<label>Class <select id="cls"></select></label>
<label>Method <select id="method"></select></label>
<label>Input <input id="q" type="search" placeholder="name contains"></label>
<span id="count"></span></header>
<main id="grid"></main>
<script id="rows" type="application/json">__DATA__</script>
<script>
(function(){
const rows=JSON.parse(document.getElementById('rows').textContent);
const $=id=>document.getElementById(id);
const cname=(k,l)=>l&&l!==String(k)?k+' '+l:String(k);
function fill(sel,items){for(const [v,t] of items){const o=document.createElement('option');o.value=v;o.textContent=t;sel.appendChild(o);}}
const classes=new Map();for(const r of rows){classes.set(r['class'],cname(r['class'],r.label));}
fill($('cls'),[['','all classes'],...[...classes].sort((a,b)=>a[0]-b[0]).map(([k,t])=>[String(k),t])]);
fill($('method'),[['','all methods (comparison figures)'],...[...new Set(rows.map(r=>r.method))].map(m=>[m,m])]);
const p=new URLSearchParams(location.hash.slice(1));
if(p.has('class'))$('cls').value=p.get('class');if(p.has('method'))$('method').value=p.get('method');
if(p.has('q'))$('q').value=p.get('q');
function render(){
 const c=$('cls').value,m=$('method').value,q=$('q').value.toLowerCase();
 location.hash=new URLSearchParams({class:c,method:m,q:q}).toString();
 const grid=$('grid');grid.textContent='';
 let sel=rows.filter(r=>(c===''||String(r['class'])===c)&&(q===''||r.input.toLowerCase().includes(q)));
 if(m!==''){sel=sel.filter(r=>r.method===m);}
 else{const seen=new Set();sel=sel.filter(r=>{if(seen.has(r.figure))return false;seen.add(r.figure);return true;});}
 grid.style.setProperty('--w',m===''?'520px':'260px');
 for(const r of sel){
  const card=document.createElement('div');card.className='card';
  card.dataset.cls=r['class'];card.dataset.method=m===''?'':r.method;
  const a=document.createElement('a');a.href=r.figure;
  const img=document.createElement('img');img.loading='lazy';img.src=(m!==''&&r.heatmap)?r.heatmap:r.figure;img.alt=r.sample;
  a.appendChild(img);card.appendChild(a);
  const n=document.createElement('div');n.className='name';n.textContent=r.input;card.appendChild(n);
  const meta=document.createElement('div');meta.className='meta';
  meta.textContent='predicted '+cname(r.predicted,r.predicted_label)+' ('+r.predicted_score.toFixed(3)+')'+
   ' · explained '+cname(r['class'],r.label)+' ('+r.score.toFixed(3)+')'+(m!==''?' · '+r.method+' · sum R '+r.relevance_sum.toPrecision(3):'');
  card.appendChild(meta);grid.appendChild(card);
 }
 if(!sel.length){const e=document.createElement('div');e.className='empty';e.textContent='Nothing matches these filters.';grid.appendChild(e);}
 $('count').textContent=sel.length+(m===''?' figure':' heatmap')+(sel.length===1?'':'s')+' shown ('+rows.length+' rows in all)';
}
for(const id of ['cls','method'])$(id).addEventListener('change',render);
$('q').addEventListener('input',render);
render();
})();
</script></body></html>
"""
