/**
 * Spaces out the rounds of a repeated piece of work (a drain, a write-through): each `turn` waits until `everyMs`
 * after the previous turn began, so the first round after a pause goes at once and a busy caller at most every
 * `everyMs`, with what gathered meanwhile.
 */
export class Pace {
  private last = 0;

  constructor(private readonly everyMs: number) {}

  async turn(): Promise<void> {
    const wait = this.last + this.everyMs - Date.now();
    if (wait > 0) await scheduler.wait(wait);
    this.last = Date.now();
  }
}
