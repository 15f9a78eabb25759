import type { ContentfulStatusCode } from "hono/utils/http-status";

/** The closed set of error codes of the contract, with their HTTP statuses. */
export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  ROOM_IMMUTABLE: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  UNAVAILABLE: 503,
} as const satisfies Record<string, ContentfulStatusCode>;

/** One of the contract's error codes. */
export type ErrorCode = keyof typeof ERROR_STATUS;

/** One validation problem: where it is and what is wrong. */
export interface ErrorDetail {
  path: string;
  message: string;
}

/** A plain, serialisable error: what crosses Durable Object RPC and WebSocket error frames. */
export interface ErrorInfo {
  code: ErrorCode;
  message: string;
  details?: ErrorDetail[];
}

/** The error every route throws; `app.onError` renders it in the contract's shape. */
export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly details?: ErrorDetail[];
  readonly headers?: Record<string, string>;

  constructor(code: ErrorCode, message: string, details?: ErrorDetail[], headers?: Record<string, string>) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.details = details;
    this.headers = headers;
  }

  /** The HTTP status of this error's code. */
  get status(): ContentfulStatusCode {
    return ERROR_STATUS[this.code];
  }

  /** The serialisable form of this error. */
  toInfo(): ErrorInfo {
    return { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) };
  }

  /** Rebuilds an ApiError from its serialisable form. */
  static from(info: ErrorInfo): ApiError {
    return new ApiError(info.code, info.message, info.details);
  }
}

/** The contract's error body. 5xx bodies never carry internal text: callers pass a generic message. */
export function errorBody(info: ErrorInfo, requestId: string) {
  return {
    error: {
      code: info.code,
      message: info.message,
      requestId,
      ...(info.details && info.details.length > 0 ? { details: info.details } : {}),
    },
  };
}

/** Shorthand for the 404 that hides whether a resource exists. */
export function notFound(what: string): ApiError {
  return new ApiError("NOT_FOUND", `${what} not found`);
}

/** The outcome of an operation that may fail with a contract error, safe to return over RPC. */
export type Result<T> = { ok: true; value: T } | { ok: false; error: ErrorInfo };

/** A successful Result. */
export function ok<T>(value: T): Result<T> {
  return { ok: true, value };
}

/** A failed Result. */
export function fail(code: ErrorCode, message: string, details?: ErrorDetail[]): Result<never> {
  return { ok: false, error: { code, message, ...(details ? { details } : {}) } };
}

/** The value of a Result, or its error thrown as an ApiError. */
export function unwrap<R extends Result<unknown>>(result: R): Extract<R, { ok: true }>["value"] {
  if (!result.ok) throw ApiError.from(result.error);
  return result.value;
}
