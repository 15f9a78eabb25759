/**
 * A number read from a worker's configuration (`[vars]`, secrets, `.dev.vars`): the value when it is a finite number
 * of at least `least`, else `fallback` (unset, blank, or not a number).
 */
export function numberSetting(value: string | undefined, fallback: number, least = 0): number {
  const number = value === undefined || value.trim() === "" ? NaN : Number(value);
  return Number.isFinite(number) && number >= least ? number : fallback;
}
