"""Invoice documents: the view model of an issued invoice, its one template (hosted page and PDF),
the locales it is written in, the stored PDFs and the signed links that open them."""
