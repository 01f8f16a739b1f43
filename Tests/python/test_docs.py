"""The documentation keeps up with the binary: every flag any command's --help lists is in
docs/, the README stays a front door (at most 250 lines) and its links resolve."""
import re
import subprocess

from conftest import REPO

COMMANDS = [[], ["summary"], ["gradcheck"], ["eval"], ["predict"], ["bn-report"]]


def help_flags(bntrain, command):
    out = subprocess.run([bntrain] + command + ["--help"], capture_output=True, text=True, check=True).stdout
    return {f for f in re.findall(r"^\s+(--[a-z0-9][a-z0-9-]*)", out, re.M)} - {"--help"}


def test_every_flag_in_help_is_documented(bntrain):
    docs = "\n".join(p.read_text() for p in sorted((REPO / "docs").glob("*.md")))
    documented = set(re.findall(r"`(--[a-z0-9][a-z0-9-]*)", docs))
    for command in COMMANDS:
        flags = help_flags(bntrain, command)
        assert len(flags) >= 4, (command, flags)
        missing = sorted(flags - documented)
        assert not missing, f"bntrain {' '.join(command)} --help lists flags no docs/*.md page shows in backticks: {missing}"


def test_readme_is_a_front_door_whose_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "Scripts/train" in readme and "Scripts/test" in readme
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert len(links) >= 10
    for link in links:
        assert (REPO / link).exists(), f"README links to {link}, which does not exist"
    for page in (REPO / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.name} links to {link}, which does not exist"
