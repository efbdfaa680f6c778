/*
 * sanitized.h: SANITIZED is 1 in a sanitizer build (gcc's __SANITIZE_*
 * macros, clang's __has_feature), else 0. Tests that measure time, memory
 * or stack depth widen their bounds with it: sanitizers slow every call
 * down and widen every frame.
 */
#ifndef CACHESVC_TESTS_SANITIZED_H
#define CACHESVC_TESTS_SANITIZED_H

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#endif /* CACHESVC_TESTS_SANITIZED_H */
