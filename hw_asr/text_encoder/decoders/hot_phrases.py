"""Hot-word (phrase) boosting for our prefix beam search."""

from collections.abc import Callable, Iterable


class HotPhrases:
    """Hot words or phrases and the bonus a prefix's words earn: ``weight`` for each hot phrase completed,
    and for one in progress ``weight`` times the share of its characters spelled so far.

    The bonus of a partial match is a share of the phrase, not a sum per character: a common start of a
    long name ("the" of "thermopylae") earns 3/11 of the weight, not 3 characters' worth, so that at a weight
    large enough to recall the names the beam does not fill with common words that begin like one."""

    def __init__(self, phrases: Iterable[str], weight: float, normalize: Callable[[str], str]) -> None:
        self.phrases = [tuple(normalize(p).split()) for p in phrases if normalize(p).split()]
        self.weight = weight

    def __bool__(self) -> bool:
        return bool(self.phrases) and self.weight != 0

    @staticmethod
    def _chars(words: tuple[str, ...]) -> int:
        return sum(len(w) for w in words)

    def completed(self, words: tuple[str, ...]) -> float:
        """Bonus for the phrases that end with the last completed word."""
        return self.weight * sum(1 for p in self.phrases if len(words) >= len(p) and words[-len(p) :] == p)

    def ongoing(self, words: tuple[str, ...], partial: str) -> float:
        """Bonus for the furthest match in progress: a phrase whose first k words end the completed words
        and whose next word starts with ``partial`` (a whole phrase is counted by :meth:`completed`)."""
        best = 0.0
        for p in self.phrases:
            for k in range(len(p)):
                if (k or partial) and len(words) >= k and words[len(words) - k :] == p[:k] and p[k].startswith(partial):
                    best = max(best, (self._chars(p[:k]) + len(partial)) / self._chars(p))
        return self.weight * best

    def total(self, words: tuple[str, ...]) -> float:
        """Bonus of a finished hypothesis: every hot phrase it contains."""
        return self.weight * sum(
            1 for p in self.phrases for i in range(len(words) - len(p) + 1) if words[i : i + len(p)] == p
        )
