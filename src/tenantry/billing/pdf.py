"""An invoice as PDF, written here: text in the standard Helvetica fonts, nothing else.

No rendering service and no dependency: a PDF of a few text pages is a dozen objects. The
bytes depend on the invoice alone (no creation date, no random document id), so the same
invoice gives the same file every time, and a stored checksum proves it unchanged.
"""

from __future__ import annotations

from tenantry.billing.schemas import InvoicePublic

PAGE_W, PAGE_H = 595, 842  # A4 in points
MARGIN = 50
LEADING = 14
ROWS_PER_PAGE = 48


def _escape(text: str) -> str:
    """A PDF literal string in WinAnsi: backslash and parentheses escaped; what WinAnsi
    cannot show becomes '?'."""
    out = []
    for ch in text:
        if ch in "\\()":
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            try:
                byte = ch.encode("cp1252")
            except UnicodeEncodeError:
                byte = b"?"
            out.append(f"\\{byte[0]:03o}")
    return "".join(out)


def _rows(invoice: InvoicePublic) -> list[tuple[str, str, str, str, bool]]:
    """(description, quantity, unit price, amount, bold) for every printed row."""
    head = [
        (f"Invoice {invoice.id}", "", "", "", True),
        (f"{invoice.isv} - {invoice.period}", "", "", "", False),
        (f"Issued {invoice.issued_at:%Y-%m-%d %H:%M} UTC" if invoice.issued_at else
         "Projection (the month has not ended)", "", "", "", False),
        (f"Active users: {invoice.active_users}", "", "", "", False),
        ("", "", "", "", False),
        ("Description", "Quantity", "Unit price", f"Amount ({invoice.currency})", True),
    ]
    body = [(line.description, line.quantity, line.unit_price or "", line.amount, False)
            for line in invoice.lines]
    tail = [
        ("", "", "", "", False),
        ("Subtotal", "", "", invoice.subtotal, False),
        (f"Tax ({invoice.tax_rate} %)", "", "", invoice.tax, False),
        ("Total", "", "", invoice.total, True),
    ]
    return head + body + tail


def _wrap(text: str, width: int) -> list[str]:
    words, lines, current = text.split(" "), [], ""
    for w in words:
        if current and len(current) + 1 + len(w) > width:
            lines.append(current)
            current = w
        else:
            current = f"{current} {w}" if current else w
    return [*lines, current]


def _page_stream(rows: list[tuple[str, str, str, str, bool]], page: int, pages: int) -> bytes:
    ops = ["BT"]
    y = PAGE_H - MARGIN
    right = {1: 370, 2: 460, 3: PAGE_W - MARGIN}  # right edges of the number columns
    for desc, qty, unit, amount, bold in rows:
        font = "/F2" if bold else "/F1"
        for i, part in enumerate(_wrap(desc, 52) or [""]):
            ops.append(f"{font} 9 Tf 1 0 0 1 {MARGIN} {y} Tm ({_escape(part)}) Tj")
            if i == 0:
                for col, value in ((1, qty), (2, unit), (3, amount)):
                    if value:
                        # right-aligned by an estimate of Helvetica's digit width (0.556 em)
                        x = right[col] - round(len(value) * 9 * 0.556)
                        ops.append(f"{font} 9 Tf 1 0 0 1 {x} {y} Tm ({_escape(value)}) Tj")
            y -= LEADING
    ops.append(f"/F1 8 Tf 1 0 0 1 {MARGIN} {MARGIN - 20} Tm (Page {page} of {pages}) Tj")
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def render(invoice: InvoicePublic) -> bytes:
    rows = _rows(invoice)
    chunks = [rows[i:i + ROWS_PER_PAGE] for i in range(0, len(rows), ROWS_PER_PAGE)] or [[]]
    n = len(chunks)
    # objects: 1 catalog, 2 pages, 3 Helvetica, 4 Helvetica-Bold, then page/content pairs
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        (f"<< /Type /Pages /Count {n} /Kids ["
         + " ".join(f"{5 + 2 * i} 0 R" for i in range(n)) + "] >>").encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold "
        b"/Encoding /WinAnsiEncoding >>",
    ]
    for i, chunk in enumerate(chunks):
        stream = _page_stream(chunk, i + 1, n)
        objects.append((f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_W} {PAGE_H}] "
                        f"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> "
                        f"/Contents {6 + 2 * i} 0 R >>").encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += (b"trailer\n<< /Size %d /Root 1 0 R /Info << /Title (%s) >> >>\nstartxref\n%d\n"
            b"%%%%EOF\n" % (len(objects) + 1, _escape(f"Invoice {invoice.id}").encode("latin-1"),
                            xref))
    return bytes(out)
