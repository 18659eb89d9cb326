// Downloads made in the page (CSV and JSON as Blobs: nothing is sent anywhere), shared by app.js and live.js.
"use strict";

window.fdFiles = (() => {
  // A CSV cell: numbers as they are, null/undefined empty, text quoted when it holds a comma, quote or newline.
  function cell(value) {
    if (value === null || value === undefined) return "";
    const text = String(value);
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  // CSV text with a header row; rows are objects keyed by the column names.
  function csv(columns, rows) {
    const lines = [columns.join(",")];
    rows.forEach((row) => lines.push(columns.map((c) => cell(row[c])).join(",")));
    return `${lines.join("\n")}\n`;
  }

  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000); // after the browser has taken it
  }

  return {
    csv,
    downloadCsv: (name, columns, rows) => download(name, csv(columns, rows), "text/csv;charset=utf-8"),
    downloadJson: (name, value) => download(name, `${JSON.stringify(value, null, 2)}\n`, "application/json"),
  };
})();
