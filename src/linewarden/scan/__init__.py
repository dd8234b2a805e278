"""Log scanner: find subscriber identity in web server logs, report it masked, redact it.

Library use::

    from linewarden.scan import Detector, ScanOptions, scan_paths
    for report in scan_paths(["/var/log/nginx"], ScanOptions(regions=("GB",))):
        print(report.path, report.findings)
"""

from linewarden.scan.detect import Detector, Finding
from linewarden.scan.report import FileReport
from linewarden.scan.scanner import ScanOptions, scan_paths

__all__ = ["Detector", "FileReport", "Finding", "ScanOptions", "scan_paths"]
