// Subject rules exactly as NATS applies them: tokens split on `.`, no empty token, `*` matches one
// token, `>` one or more and only as the last token; `foo*` and `foo>` are plain literal tokens.

const DOT = 46; // '.'
const STAR = 42; // '*'
const GT = 62; // '>'

/** True when `subject` is a valid subscription filter (wildcards allowed). */
export function isValidSubject(subject: string): boolean {
  return checkSubject(subject, true);
}

/** True when `subject` is a valid publish subject: valid and without wildcard tokens. */
export function isValidLiteralSubject(subject: string): boolean {
  return checkSubject(subject, false);
}

// One pass over the characters, no split and no regex: publish validates every subject it sees.
function checkSubject(subject: string, wildcardsAllowed: boolean): boolean {
  const length = subject.length;
  if (length === 0) return false;
  let tokenStart = 0;
  let sawFullWildcard = false;
  for (let i = 0; i <= length; i++) {
    const c = i < length ? subject.charCodeAt(i) : DOT;
    if (c === DOT) {
      const tokenLength = i - tokenStart;
      if (tokenLength === 0) return false;
      if (sawFullWildcard) return false; // `>` was not the last token
      if (tokenLength === 1) {
        const t = subject.charCodeAt(tokenStart);
        if (t === STAR || t === GT) {
          if (!wildcardsAllowed) return false;
          if (t === GT) sawFullWildcard = true;
        }
      }
      tokenStart = i + 1;
    } else if (c === 32 || c === 9 || c === 13 || c === 10) {
      return false; // whitespace would break the wire protocol's argument split
    }
  }
  return true;
}

/** True when the subject has a `*` or `>` token (so it cannot be published to). */
export function hasWildcard(subject: string): boolean {
  const length = subject.length;
  for (let i = 0; i < length; i++) {
    const c = subject.charCodeAt(i);
    if ((c === STAR || c === GT) && (i === 0 || subject.charCodeAt(i - 1) === DOT)) {
      if (i + 1 === length || subject.charCodeAt(i + 1) === DOT) return true;
    }
  }
  return false;
}

/**
 * True when the literal subject `subject` is matched by the filter `filter`. Used only when a
 * subscription comes or goes (to keep the match cache exact), never on the publish path.
 */
export function subjectMatchesFilter(subject: string, filter: string): boolean {
  const s = subject.split('.');
  const f = filter.split('.');
  for (let i = 0; i < f.length; i++) {
    const token = f[i];
    if (token === '>') return s.length > i;
    if (i >= s.length) return false;
    if (token !== '*' && token !== s[i]) return false;
  }
  return s.length === f.length;
}
