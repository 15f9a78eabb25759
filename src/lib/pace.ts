/**
 * Spaces out the rounds of a repeated piece of work (a drain, a write-through): each `turn` waits until `everyMs`
 * after the previous turn began, so the first round after a pause goes at once and a busy caller at most every
 * `everyMs`, with what gathered meanwhile. `hurry` lets the turn under way, or else the next, go at once.
 */
export class Pace {
  private last = 0;
  private hurried = false;
  private wake: (() => void) | null = null;

  constructor(private readonly everyMs: number) {}

  async turn(): Promise<void> {
    const wait = this.last + this.everyMs - Date.now();
    if (wait > 0 && !this.hurried) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        timer = setTimeout(resolve, wait);
      });
      clearTimeout(timer);
      this.wake = null;
    }
    this.hurried = false;
    this.last = Date.now();
  }

  /** Ends the wait of the turn under way at once, or else lets the next turn go without one. */
  hurry(): void {
    this.hurried = true;
    this.wake?.();
  }
}
