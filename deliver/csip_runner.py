"""Run inside eark-validator's own virtual environment (deliver/csip.py makes it): validate
packages against E-ARK CSIP with the four CSIP vocabularies read from local copies.

eark-validator 1.1.3 downloads those vocabularies from the DILCIS Board's site when it is
imported; here urllib is given an opener that serves exactly those four addresses from the
files shipped in deliver/schemas/vocabularies and refuses every other address, before the
import. Standalone on purpose (no sohoa import: another interpreter runs it).

    python csip_runner.py VOCAB_DIR VERSION PACKAGE...   -> one JSON report per line
"""

import io
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

BASE = "https://earkcsip.dilcis.eu/schema/"
NAMES = ("CSIPVocabularyContentCategory.xml", "CSIPVocabularyContentInformationType.xml",
         "CSIPVocabularyOAISPackageType.xml", "CSIPVocabularyStatus.xml")


class LocalVocabularies(urllib.request.BaseHandler):
    def __init__(self, directory: Path) -> None:
        self.files = {BASE + n: directory / n for n in NAMES}

    def default_open(self, req):  # every scheme comes here first
        path = self.files.get(req.full_url)
        if path is None:
            raise urllib.error.URLError(f"network refused (local vocabularies only): "
                                        f"{req.full_url}")
        return urllib.response.addinfourl(io.BytesIO(path.read_bytes()), {}, req.full_url, 200)


def main() -> int:
    vocab, version, packages = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    opener = urllib.request.OpenerDirector()
    opener.add_handler(LocalVocabularies(vocab))
    urllib.request.install_opener(opener)
    from eark_validator import packages as validator
    from eark_validator.specifications.specification import SpecificationVersion

    for p in packages:
        try:
            report = validator.PackageValidator(Path(p), SpecificationVersion(version)) \
                .validation_report
        except Exception as exc:  # a corrupt package is that package's fault, not a crash
            print(json.dumps({"package": p, "error": f"{type(exc).__name__}: {exc}"}))
            continue
        print(json.dumps({"package": p, "report": json.loads(report.model_dump_json())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
