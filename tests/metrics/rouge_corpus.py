"""A small summary corpus for ROUGE tests: multi-sentence texts (so ROUGE-Lsum differs from ROUGE-L), an empty
hypothesis, punctuation only, unicode, stemming ("libraries"/"library", "running"/"runs") and exact matches."""

REFERENCES = [
    "GNU C library: shared libraries. It also contains the dynamic linker. Use it everywhere.",
    "command-line tool for running tests",
    "Übersetzungen für „Grüße“ — café crème, naïve façade, 日本語 text",
    "Python 3 bindings for libfoo",
    "The daemon watches files. It runs actions when they change!",
    "documentation for the foo library",
    "metapackage to pull in fonts-dejavu-core and fonts-dejavu-extra",
]
HYPOTHESES = [
    "GNU C library. It contains the dynamic linker and shared libraries.",
    "",
    "Grüße — cafe creme, naive facade",
    "Python 3 bindings for libfoo",
    "daemon that runs actions. It watches files when they change",
    "...",
    "metapackage for the fonts-dejavu fonts. Core and extra",
]
# Lsum scores sentences on their own lines: the same texts split by hand, one sentence a line.
REFERENCE_LINES = [
    "GNU C library: shared libraries.\nIt also contains the dynamic linker.\nUse it everywhere.",
    *REFERENCES[1:4],
    "The daemon watches files.\nIt runs actions when they change!",
    *REFERENCES[5:],
]
HYPOTHESIS_LINES = [
    "GNU C library.\nIt contains the dynamic linker and shared libraries.",
    *HYPOTHESES[1:4],
    "daemon that runs actions.\nIt watches files when they change",
    HYPOTHESES[5],
    "metapackage for the fonts-dejavu fonts.\nCore and extra",
]
