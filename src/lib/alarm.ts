/**
 * A Durable Object's one alarm, shared by everything that needs a wake-up (an outbox retry, the socket sweep): each
 * asks for the alarm to run no later than its time, and the earliest wins. The time set is remembered, so asking for
 * a later time costs no storage call.
 */
export class AlarmSchedule {
  /** When the alarm is set for; null until read from storage, +Infinity when none is pending. */
  private at: number | null = null;

  constructor(private readonly storage: DurableObjectStorage) {}

  /** Makes sure the alarm runs no later than `at`. */
  async noLaterThan(at: number): Promise<void> {
    if (this.at === null) {
      const current = await this.storage.getAlarm();
      this.at ??= current ?? Number.POSITIVE_INFINITY;
    }
    if (this.at > Date.now() && this.at <= at) return;
    this.at = at;
    await this.storage.setAlarm(at);
  }

  /** The alarm fired: none is pending until one is asked for again. */
  fired(): void {
    this.at = Number.POSITIVE_INFINITY;
  }
}
