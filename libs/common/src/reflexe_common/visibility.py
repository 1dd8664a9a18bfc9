"""What an HAD may see of the matcher's work (docs/security.md): the explanation of an offer ranks
every candidate with its live places and response times and names the excluded ones; an HAD is
shown only the sentence about itself, on the API and in its webhooks alike."""

from __future__ import annotations

# The matcher's explanation reads "Proposé à <name> (<finess>) : <its figures>; ensuite : <others>;
# exclus : <others> (<why>)." (reflexe_capacity.domain.matching.MatchDecision.explain).
_OTHERS = ("; ensuite : ", "; exclus : ")


def own_explanation(explanation: str, finess: str) -> str:
    """The part of `explanation` about the HAD `finess` only: what comes before the other
    candidates; nothing if the sentence proposes another HAD."""
    first = explanation
    for marker in _OTHERS:
        first = first.split(marker, 1)[0]
    if first == explanation:
        return explanation
    if first.startswith("Proposé à") and f"({finess})" not in first:
        return ""
    return first.rstrip(".") + "."
