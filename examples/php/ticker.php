<?php

/**
 * A ticker worker as a RoadRunner user writes it, on spiral/roadrunner-worker.
 * It runs under rrd unchanged (`composer install` here first):
 *
 *   server:
 *     command: "php examples/php/ticker.php"
 *
 * rrd sends every tick as body {"tick": n} with context {"lastTick": <unix seconds>}.
 */

declare(strict_types=1);

use Spiral\RoadRunner\Payload;
use Spiral\RoadRunner\Worker;

ini_set('display_errors', 'stderr');
require __DIR__ . '/vendor/autoload.php';

$worker = Worker::create();

while ($payload = $worker->waitPayload()) {
    try {
        $tick = json_decode($payload->body, true, 512, JSON_THROW_ON_ERROR)['tick'];
        $lastTick = json_decode($payload->header, true, 512, JSON_THROW_ON_ERROR)['lastTick'];
        fwrite(STDERR, sprintf("tick %d (previous at %d) in worker %d\n", $tick, $lastTick, getmypid()));
        $worker->respond(new Payload(''));
    } catch (\Throwable $e) {
        $worker->error((string) $e);
    }
}
