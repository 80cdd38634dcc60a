// Scheduled password rotation (M2M_PROXY_PASSWORD_ROTATION_DAYS): rotates once the password is older than that.
//
// Checked at most hourly, or at the due time when that comes first. In fleet mode every replica checks,
// but the rotation lock and the change time re-read after taking it mean that exactly one rotates.

import type { Clock, Timer } from '../clock.js'
import { OperationError, type RotationResult } from './operations.js'
import { messageOf } from '../errors.js'
import { ignoreCredentialsEvents, type PublishCredentialsEvent } from './events.js'

export const DAY_MS = 86_400_000
/** The longest wait between two checks. */
export const ROTATION_CHECK_INTERVAL_MS = 3_600_000
/**
 * The first check after start-up waits this long at least (M2M_PROXY_PASSWORD_ROTATION_FIRST_CHECK_MS's default): the
 * start-up login goes first.
 */
export const FIRST_CHECK_DELAY_MS = 60_000

export type RotationCheck = 'off' | 'not-due' | 'rotated' | 'busy' | 'failed'

export interface ScheduledRotations {
  passwordChangedAt: () => number | undefined
  rotateIfDue: (maxAgeMs: number) => Promise<RotationResult | undefined>
}

export class RotationScheduler {
  private timer: Timer | undefined
  private stopped = false
  private startedAt: number | undefined
  private running: Promise<RotationCheck> | undefined

  constructor (
    private readonly options: {
      /** M2M_PROXY_PASSWORD_ROTATION_DAYS; 0: off. */
      days: number
      /** M2M_PROXY_PASSWORD_ROTATION_FIRST_CHECK_MS; default FIRST_CHECK_DELAY_MS. */
      firstCheckDelayMs?: number
      clock: Clock
      operations: ScheduledRotations
      publish?: PublishCredentialsEvent
    }
  ) {}

  private get firstCheckDelayMs (): number {
    return this.options.firstCheckDelayMs ?? FIRST_CHECK_DELAY_MS
  }

  get maxAgeMs (): number {
    return this.options.days * DAY_MS
  }

  /** When the next rotation is due, or undefined when off or the change time is not known yet. */
  dueAt (): number | undefined {
    const changedAt = this.options.operations.passwordChangedAt()
    return this.options.days === 0 || changedAt === undefined ? undefined : changedAt + this.maxAgeMs
  }

  /** Schedules the checks (nothing when off, or with a clock that cannot schedule). */
  start (): void {
    if (this.options.days === 0) return
    this.startedAt = this.options.clock.now()
    this.schedule(this.firstCheckDelayMs)
  }

  /**
   * The password's change time changed (fleet mode: a generation taken into use, often moments after
   * start-up, when the first check was set an hour away from the file's first sight): the next check
   * moves to the new due time, still not within a minute of start.
   */
  changeTimeUpdated (): void {
    if (this.options.days === 0 || this.startedAt === undefined || this.stopped || this.running !== undefined) return
    this.schedule(Math.max(0, this.startedAt + this.firstCheckDelayMs - this.options.clock.now()))
  }

  stop (): void {
    this.stopped = true
    this.timer?.cancel()
    this.timer = undefined
  }

  /** Rotates when due; one check at a time. */
  async check (): Promise<RotationCheck> {
    this.running ??= this.checkOnce().finally(() => {
      this.running = undefined
    })
    return await this.running
  }

  private async checkOnce (): Promise<RotationCheck> {
    const { days, clock, operations } = this.options
    const publish = this.options.publish ?? ignoreCredentialsEvents
    if (days === 0) return 'off'
    const dueAt = this.dueAt()
    if (dueAt !== undefined && clock.now() < dueAt) return 'not-due'
    try {
      const result = await operations.rotateIfDue(this.maxAgeMs)
      if (result === undefined) return 'not-due' // another replica rotated meanwhile
      publish({
        type: 'info',
        message: `scheduled password rotation done (M2M_PROXY_PASSWORD_ROTATION_DAYS ${days})${result.verified ? '' : ', but the login with the new password failed'}`
      })
      return 'rotated'
    } catch (error) {
      // another rotation under way: its new password is young
      if (error instanceof OperationError && error.kind === 'busy') return 'busy'
      publish({
        type: 'warning',
        message: `scheduled password rotation failed (checked again within the hour): ${messageOf(error)}`
      })
      return 'failed'
    }
  }

  private schedule (atLeastMs = 0): void {
    const setTimer = this.options.clock.setTimer
    if (this.stopped || setTimer === undefined) return
    const dueAt = this.dueAt()
    const untilDue = dueAt === undefined ? ROTATION_CHECK_INTERVAL_MS : dueAt - this.options.clock.now()
    const delay = Math.max(atLeastMs, 1_000, Math.min(ROTATION_CHECK_INTERVAL_MS, untilDue))
    this.timer?.cancel()
    this.timer = setTimer(() => {
      this.timer = undefined
      if (this.stopped) return
      void this.check().then((outcome) => {
        // After a failure, an hour (not a loop of resets); while another replica rotates, a minute.
        this.schedule(
          outcome === 'failed' ? ROTATION_CHECK_INTERVAL_MS : outcome === 'busy' ? this.firstCheckDelayMs : 0
        )
      })
    }, delay)
  }
}
