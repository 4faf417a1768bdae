// What create says about a change it will not turn into replaced code: refused (replacing code
// cannot apply it) or ignored (it cannot reach the running kernel). Shared by the passes that
// find such changes (classify, hooks, extract).

/** Refusal is one change that replacing code cannot apply. */
export interface Refusal {
  object: string;
  symbol: string;
  reason: string;
}

/** Ignored is a change that cannot reach the running kernel (code that ran at boot, an export). */
export interface Ignored {
  object: string;
  symbol: string;
  reason: string;
}
