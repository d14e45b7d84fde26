/**
 * Answers in frame order. Every binary message takes a place in line when it arrives (arrival order
 * is frame order, since accepted frame ids must increase); its answer fills that place whenever it
 * is known, and the line is sent from the front up to the first place still waiting. So a `dropped`
 * for a waiting frame that a newer one superseded is held until the older frame in flight has been
 * answered, and never overtakes it.
 */
export interface Place<A> {
  answer: A | undefined;
}

export class OrderedAnswers<A> {
  /** Held places, oldest first; bounded by the session (it stops reading past its limit). */
  private readonly line: Place<A>[] = [];

  /** A place at the back of the line for a frame that just arrived. */
  open(): Place<A> {
    const place: Place<A> = { answer: undefined };
    this.line.push(place);
    return place;
  }

  /** Fills a place; call `flush` afterwards. A place is filled once. */
  fill(place: Place<A>, answer: A): void {
    if (place.answer !== undefined) throw new Error('an answer place was filled twice');
    place.answer = answer;
  }

  /** Sends every answer at the front of the line that is known, in order. */
  flush(send: (answer: A) => void): void {
    while (this.line.length > 0 && this.line[0].answer !== undefined) send(this.line.shift()!.answer!);
  }

  /** Places taken and not yet sent (answered or not). */
  get held(): number {
    return this.line.length;
  }

  /** Forgets everything (the socket is gone). */
  clear(): void {
    this.line.length = 0;
  }
}
